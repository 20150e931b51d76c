"""``python -m bench hostile``: a corpus of hostile uploads against a real service, with its memory.

Each case is generated here (nothing is committed as a blob): decompression and frame bombs, forged and
truncated codestreams, deep pixels, malformed DICOM attributes, a bare DICOM dataset, an oversized model
name. Every case is sent to a fresh-enough ``python -m service`` (the one under test, or one started on a
repository), its status checked against what it must get, ``/health/ready`` checked after it, and the
service's peak resident memory (``VmHWM``) read: before each request the peak is reset to the current
resident size (``/proc/PID/clear_refs``), so each figure is that request's own growth. The report
gives the worst growth over the whole corpus, which docs/service.md ("Bounded memory") states beside the
decode budget.
"""

from __future__ import annotations

import io
import json
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from bench.errors import BenchError
from bench.load import machine
from bench.process import mib, peak_rss_bytes, rss_bytes, running_service
from service.logging import is_json_object

__all__ = ["CASES", "HostileCase", "run_hostile"]

SLICE = "sartaj-brain-tumor-mri/Testing/glioma_tumor/image(1).jpg"


@dataclass(frozen=True)
class HostileCase:
    """One hostile upload: how to make it and which statuses are right for it."""

    name: str
    make: Callable[[Path], tuple[bytes, str]]
    """data root -> (body, content type)."""
    expected: frozenset[int]
    what: str
    model: str | None = None


def _real_jpeg(data_root: Path) -> bytes:
    return (data_root / SLICE).read_bytes()


def _sof_offset(jpeg: bytes) -> int:
    """Offset of the first SOFn marker of a JPEG (baseline or progressive)."""
    position = 2
    while position + 4 <= len(jpeg):
        if jpeg[position] != 0xFF:
            raise ValueError("not a JPEG marker")
        marker = jpeg[position + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return position
        (length,) = struct.unpack(">H", jpeg[position + 2 : position + 4])
        position += 2 + length
    raise ValueError("no SOF marker")


def jpeg_with_forged_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same codestream with a frame header that declares ``width`` x ``height``."""
    at = _sof_offset(jpeg)
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


def _forged_jpeg(data_root: Path) -> tuple[bytes, str]:
    return jpeg_with_forged_size(_real_jpeg(data_root), 7000, 7000), "image/jpeg"


def _truncated_jpeg(data_root: Path) -> tuple[bytes, str]:
    jpeg = _real_jpeg(data_root)
    return jpeg[: len(jpeg) // 2] + b"\xff\xd9", "image/jpeg"


def _deep_png(_: Path) -> tuple[bytes, str]:
    # 7000 x 7000 16-bit RGBA: 392 MB of pixels from a few hundred KB of zeros
    ok, png = cv2.imencode(".png", np.zeros((7000, 7000, 4), np.uint16), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return png.tobytes(), "image/png"


def _float_tiff(_: Path) -> tuple[bytes, str]:
    # 3000 x 3000 RGBA float64: 288 MB of pixels, deflated to a few hundred KB
    return tiff_bytes(np.full((3000, 3000, 4), 0.5, np.float64), deflate=True), "image/tiff"


def _float16_tiff(_: Path) -> tuple[bytes, str]:
    return tiff_bytes(np.full((64, 64), 0.5, np.float16)), "image/tiff"


def tiff_bytes(pixels: np.ndarray, *, deflate: bool = False) -> bytes:
    """A minimal little-endian single-strip TIFF of ``pixels`` (H, W) or (H, W, C), any NumPy number type,
    optionally deflate-compressed: the sample formats and depths OpenCV's encoder will not write."""
    height, width = pixels.shape[:2]
    samples = 1 if pixels.ndim == 2 else pixels.shape[2]
    bits = pixels.dtype.itemsize * 8
    sample_format = {"u": 1, "i": 2, "f": 3}[pixels.dtype.kind]
    data = np.ascontiguousarray(pixels).tobytes()
    if deflate:
        data = zlib.compress(data, 9)
    extra = b""  # values that do not fit in an entry: after the IFD

    def entry(tag: int, kind: int, values: list[int]) -> bytes:
        nonlocal extra
        size = {3: 2, 4: 4}[kind]
        packed = b"".join(struct.pack("<H" if kind == 3 else "<I", v) for v in values)
        if len(packed) <= 4:
            return struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\x00")
        offset = extra_at + len(extra)
        extra += packed
        assert size * len(values) == len(packed)
        return struct.pack("<HHII", tag, kind, len(values), offset)

    count = 11 if samples == 4 else 10
    extra_at = 8 + 2 + 12 * count + 4
    fields = [
        entry(256, 4, [width]), entry(257, 4, [height]), entry(258, 3, [bits] * samples),
        entry(259, 3, [8 if deflate else 1]), entry(262, 3, [2 if samples >= 3 else 1]),
    ]  # fmt: skip
    strip_offset_index = len(fields)
    fields += [entry(273, 4, [0]), entry(277, 3, [samples])]
    fields += [entry(278, 4, [height]), entry(279, 4, [len(data)])]
    if samples == 4:
        fields.append(entry(338, 3, [2]))  # ExtraSamples: unassociated alpha
    fields.append(entry(339, 3, [sample_format] * samples))
    data_at = extra_at + len(extra)
    fields[strip_offset_index] = struct.pack("<HHII", 273, 4, 1, data_at)
    ifd = struct.pack("<H", len(fields)) + b"".join(fields) + b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + extra + data


def _dicom_bytes(dataset: Any) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _mr_small() -> Any:
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("MR_small.dcm")
    if path is None:
        raise BenchError("pydicom's test file MR_small.dcm is missing")
    return pydicom.dcmread(path)


def _dicom_frame_bomb(data_root: Path) -> tuple[bytes, str]:
    """64 x 64 in the DICOM header; the encapsulated JPEG frame says 20000 x 20000."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    dataset = _mr_small()
    ok, jpeg = cv2.imencode(".jpg", np.full((64, 64), 128, np.uint8))
    assert ok
    frame = jpeg_with_forged_size(jpeg.tobytes(), 20000, 20000)
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    dataset.PixelData = encapsulate([frame])
    dataset["PixelData"].VR = "OB"
    return _dicom_bytes(dataset), "application/dicom"


def _dicom_deflate_bomb(_: Path) -> tuple[bytes, str]:
    """Deflated Explicit VR Little Endian whose data set inflates to ~400 MB (a huge private element)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    dataset = _mr_small()
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    plain = _dicom_bytes(dataset)
    # re-deflate the body with a 400 MB zero-filled OB element appended: a few hundred KB on the wire
    preamble_and_meta, body = _split_meta(plain)
    bomb = struct.pack("<HH2sHI", 0x0099, 0x1000, b"OB", 0, 400 * 2**20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    inflated_body = zlib.decompress(body, -15)
    deflated = compressor.compress(inflated_body + bomb)
    zeros = bytes(2**20)
    for _chunk in range(400):
        deflated += compressor.compress(zeros)
    deflated += compressor.flush()
    return preamble_and_meta + deflated, "application/dicom"


def _split_meta(data: bytes) -> tuple[bytes, bytes]:
    """(preamble + 'DICM' + file meta group, the rest) of a DICOM file written with a file meta group."""
    position = 132
    while position + 8 <= len(data):
        group, _element = struct.unpack("<HH", data[position : position + 4])
        if group != 0x0002:
            break
        vr = data[position + 4 : position + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            (length,) = struct.unpack("<I", data[position + 8 : position + 12])
            position += 12 + length
        else:
            (length,) = struct.unpack("<H", data[position + 6 : position + 8])
            position += 8 + length
    return data[:position], data[position:]


def _dicom_bad_rescale(_: Path) -> tuple[bytes, str]:
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    dataset = _mr_small()
    # written as raw bytes: pydicom itself would refuse to hold a DS that is not a number
    dataset[0x00281053] = RawDataElement(Tag(0x00281053), "DS", 2, b"x ", 0, False, True)
    return _dicom_bytes(dataset), "application/dicom"


def _dicom_bad_voi_lut(_: Path) -> tuple[bytes, str]:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    dataset = _mr_small()
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in dataset:
            del dataset[keyword]
    lut = Dataset()
    lut.LUTDescriptor = [256, 0]  # three values are required
    lut.add_new(0x00283006, "OW", bytes(512))  # LUTData
    dataset.VOILUTSequence = Sequence([lut])
    return _dicom_bytes(dataset), "application/dicom"


def _dicom_short_modality_lut(_: Path) -> tuple[bytes, str]:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    dataset = _mr_small()
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.ModalityLUTType = "US"
    lut.add_new(0x00283006, "OW", bytes(32))  # LUTData: 16 entries where the descriptor promises 4096
    dataset.ModalityLUTSequence = Sequence([lut])
    return _dicom_bytes(dataset), "application/dicom"


def _dicom_double_pixel_data(_: Path) -> tuple[bytes, str]:
    dataset = _mr_small()
    dataset.PixelData = dataset.PixelData * 2
    return _dicom_bytes(dataset), "application/dicom"


def _dicom_bare(_: Path) -> tuple[bytes, str]:
    """The data set alone: no 128-byte preamble, no 'DICM', no file meta group (explicit VR LE)."""
    body = _split_meta(_dicom_bytes(_mr_small()))[1]
    return body, "application/dicom"


def _normal(data_root: Path) -> tuple[bytes, str]:
    return _real_jpeg(data_root), "image/jpeg"


CASES: tuple[HostileCase, ...] = (
    HostileCase("normal slice", _normal, frozenset({200}), "a real JPEG slice: the control"),
    HostileCase("jpeg forged 7000x7000", _forged_jpeg, frozenset({400, 413}), "a 23 KB JPEG claiming 49 Mpx"),
    HostileCase("jpeg truncated + EOI", _truncated_jpeg, frozenset({400}), "half a JPEG + end marker"),
    HostileCase("png 16-bit RGBA 7000x7000", _deep_png, frozenset({413}), "392 MB of pixels"),
    HostileCase("tiff float64 RGBA 3000x3000", _float_tiff, frozenset({413, 415}), "288 MB of pixels"),
    HostileCase("tiff float16", _float16_tiff, frozenset({415}), "a sample format the decoder lacks"),
    HostileCase("dicom frame bomb", _dicom_frame_bomb, frozenset({400, 413}), "64x64 header, 20000^2 frame"),
    HostileCase("dicom deflate bomb", _dicom_deflate_bomb, frozenset({413, 415}), "inflates to 400 MB"),
    HostileCase("dicom RescaleSlope 'x'", _dicom_bad_rescale, frozenset({400}), "a non-numeric DS"),
    HostileCase("dicom VOI LUT 2 values", _dicom_bad_voi_lut, frozenset({400}), "descriptor of 2 values"),
    HostileCase("dicom Modality LUT short", _dicom_short_modality_lut, frozenset({400}), "16 of 4096"),
    HostileCase("dicom PixelData x2", _dicom_double_pixel_data, frozenset({400}), "twice the declared size"),
    # decoded, then judged by the input-validity check: pydicom's 64 x 64 MR phantom may well be refused
    HostileCase("dicom bare data set", _dicom_bare, frozenset({200, 422}), "no preamble, no file meta"),
    HostileCase("model name 8000 chars", _normal, frozenset({404}), "echoed cut", model="m" * 8000),
)  # fmt: skip


def _reset_peak(pid: int) -> bool:
    """Set the process's peak RSS (VmHWM) back to its current RSS; False where the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_hostile(repository: Path, data_root: Path, out: Path, repeats: int = 3) -> dict[str, Any]:
    """Send every case ``repeats`` times to a service started on ``repository``; write hostile.json/.md."""
    started = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    with running_service(repository) as process, httpx.Client(base_url=process.url, timeout=120) as client:
        _predict(client, *_normal(data_root), None)  # warm: the first prediction sizes ONNX Runtime's arena
        idle = rss_bytes(process.pid)
        for case in CASES:
            body, content_type = case.make(data_root)
            statuses, seconds, growth = [], [], []
            resettable = _reset_peak(process.pid)
            for _ in range(repeats):
                before = rss_bytes(process.pid)
                if resettable:
                    _reset_peak(process.pid)
                clock = time.perf_counter()
                answer = _predict(client, body, content_type, case.model)
                seconds.append(time.perf_counter() - clock)
                peak = peak_rss_bytes(process.pid) or 0
                growth.append(max(0, peak - before))  # this request's own growth
                statuses.append(answer.status_code)
            ready = client.get("/health/ready").status_code
            rows.append({
                "case": case.name, "what": case.what, "upload_bytes": len(body), "statuses": statuses,
                "expected": sorted(case.expected),
                "ok": all(s in case.expected for s in statuses) and ready == 200,
                "ready_after": ready, "max_seconds": round(max(seconds), 3),
                "peak_growth_mib": mib(max(growth)), "peak_reset": resettable,
                "error_type": _error_type(answer),
            })  # fmt: skip
            print(f"{case.name}: {statuses} in {max(seconds):.2f} s, +{mib(max(growth))} MiB", flush=True)
        log = process.log.read_text(encoding="utf-8")
    non_json = [line[:200] for line in log.splitlines() if not is_json_object(line)]
    report = {
        "kind": "hostile corpus",
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "repository": str(repository),
        "repeats": repeats,
        "idle_rss_mib": mib(idle),
        "rows": rows,
        "worst_peak_growth_mib": max(float(row["peak_growth_mib"] or 0.0) for row in rows),
        "all_ok": all(row["ok"] for row in rows),
        "non_json_log_lines": non_json,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "hostile.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "hostile.md").write_text(render_markdown(report), encoding="utf-8")
    print(render_markdown(report), flush=True)
    return report


def _predict(client: httpx.Client, body: bytes, content_type: str, model: str | None) -> httpx.Response:
    params = {"model": model} if model else {}
    return client.post("/predict", params=params, files={"file": ("upload", body, content_type)})


def _error_type(answer: httpx.Response) -> str | None:
    try:
        value = answer.json()
    except ValueError:
        return None
    return value.get("error_type") if isinstance(value, dict) else None


def render_markdown(report: dict[str, Any]) -> str:
    """The corpus as a table: statuses, time, peak memory growth; the worst growth and the log check."""
    lines = [
        "# Hostile corpus",
        "",
        f"{len(report['rows'])} cases x {report['repeats']}, {report['machine']['cpus']} CPUs, started "
        f"{report['started_utc']}; idle service RSS {report['idle_rss_mib']} MiB.",
        "",
        "| case | upload | statuses | error_type | max s | peak growth MiB | ok |",
        "|---|---:|---|---|---:|---:|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['case']} ({row['what']}) | {row['upload_bytes']:,} B | {row['statuses']} | "
            f"{row['error_type'] or '-'} | {row['max_seconds']:.2f} | {row['peak_growth_mib']} | "
            f"{'yes' if row['ok'] else 'NO'} |"
        )
    lines += [
        "",
        f"Worst peak RSS growth over the corpus: **{report['worst_peak_growth_mib']} MiB**. "
        f"Every case as expected: {'yes' if report['all_ok'] else 'NO'}. "
        f"Non-JSON log lines: {len(report['non_json_log_lines'])}.",
    ]
    return "\n".join(lines) + "\n"
