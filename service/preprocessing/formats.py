"""Recognising an image container by its magic bytes, never by a file name."""

from __future__ import annotations

from typing import Final, Literal

ImageFormat = Literal["jpeg", "png", "bmp", "tiff"]

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE: Final = b"\xff\xd8\xff"
BMP_SIGNATURE: Final = b"BM"
# "BM" alone also starts text ("BMW..."), so the DIB header size that follows the 14-byte file header must be
# one of the known header versions (core, OS/2, info, v2-v5).
_BMP_DIB_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
TIFF_SIGNATURES: Final = (b"II*\x00", b"MM\x00*")

# Containers we recognise but refuse (415), with the name the error message shows.
_UNSUPPORTED_SIGNATURES: Final[tuple[tuple[bytes, str], ...]] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"8BPS", "Photoshop"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"%PDF-", "PDF"),
)
_HEIF_BRANDS: Final = frozenset({b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"})


def sniff_format(data: bytes) -> ImageFormat | None:
    """The supported container of ``data`` by magic bytes: "jpeg", "png", "bmp", "tiff", or None."""
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(BMP_SIGNATURE) and int.from_bytes(data[14:18], "little") in _BMP_DIB_SIZES:
        return "bmp"
    if data.startswith(TIFF_SIGNATURES):
        return "tiff"
    return None


def sniff_unsupported_format(data: bytes) -> str | None:
    """The display name of a recognised but unsupported container (``"GIF"``, ``"WebP"``...), else None."""
    for signature, name in _UNSUPPORTED_SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "AVIF/HEIF"
    if data[128:132] == b"DICM":
        return "DICOM"
    return None
