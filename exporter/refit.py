"""`python -m exporter.refit ENTRY`: fit (again) the calibration and input-validity check of an entry.

The entry's graph loses any trust head it had and gets a new one (:mod:`exporter.trust`); ``model.onnx``,
the manifest's ``calibration``, ``input_validity`` and ONNX record, and the trust documents are replaced in
one atomic rename, after the same checks as an export. The Keras twin is not touched.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from exporter.errors import ExportError


def build_parser() -> argparse.ArgumentParser:
    """The refit command's parser."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter.refit",
        description=(
            "Fit the temperature (on the validation subset of the entry's split) and the input-validity "
            "detector (k-NN on pooled features; bank: the training subsets of the entry's split and of each "
            "--bank-split) of an exported entry, fold both into model.onnx, and rewrite the entry atomically."
        ),
    )
    add = parser.add_argument
    add("entry", type=Path, metavar="ENTRY", help="a model-repository entry, e.g. models/sartaj-4class")
    add("--bank-split", type=Path, action="append", default=[], metavar="FILE.json",
        help="another brain MRI split whose train subset joins the bank (repeat)")  # fmt: skip
    add("--ood-layer", action="append", metavar="LAYER",
        help="Keras layer whose pooled map feeds the check (repeat; default: per backbone)")  # fmt: skip
    add("--split", type=Path, metavar="FILE.json", help="the entry's split, when not where the manifest says")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Refit one entry; an :class:`ExportError` is one sentence with exit status 2."""
    args = build_parser().parse_args(argv)
    command = "python -m exporter.refit " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        refit_entry(args.entry, args.bank_split, args.ood_layer, args.split, command)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def refit_entry(
    entry: Path,
    bank_splits: Sequence[Path],
    layers: Sequence[str] | None,
    split: Path | None,
    command: str,
    say: Callable[[str], None] = print,
) -> None:
    """Replace the trust head of ``entry`` (see the module docstring)."""
    import keras
    import onnx

    from exporter.entry import publish, staged_entry
    from exporter.manifest import (
        KERAS_FILE,
        MANIFEST_FILE,
        ONNX_FILE,
        file_record,
        load_entry,
        validate_manifest,
        write_manifest,
    )
    from exporter.trust import default_layers, fit_trust, load_trust_data, write_trust_documents
    from exporter.trust_graph import strip_trust_head
    from service.preprocessing import Recipe

    manifest = load_entry(entry)
    own_split = split or Path(manifest["evaluation"]["split"]["path"])
    if not own_split.is_file():
        raise ExportError(f"the entry's split {own_split} cannot be found; pass it with --split")
    recipe = Recipe.from_dict(manifest["preprocessing"])
    proto = strip_trust_head(onnx.load(str(entry / ONNX_FILE)))
    model = keras.models.load_model(entry / KERAS_FILE, compile=False)
    chosen = list(layers or default_layers(manifest["backbone"], manifest["keras"]["gradcam_layer"]))
    data = load_trust_data(own_split, bank_splits, recipe)
    fit = fit_trust(proto, model, data, chosen, say=say)
    with staged_entry(entry.parent, entry.name, True) as (staging, target):
        for item in entry.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
        onnx.save(fit.proto, str(staging / ONNX_FILE))
        documents = write_trust_documents(staging, fit, manifest["name"])
        manifest["onnx"].update(file_record(staging / ONNX_FILE))
        manifest["calibration"] = fit.calibration
        manifest["input_validity"] = fit.input_validity
        manifest["documents"] = [
            *[d for d in manifest.get("documents", []) if d not in documents],
            *documents,
        ]
        manifest["refit"] = {"command": command}
        problems = validate_manifest(manifest, staging)
        if problems:
            raise ExportError("the refitted manifest would be invalid: " + " ".join(problems))
        write_manifest(staging / MANIFEST_FILE, manifest)
        publish(staging, target, True)
    say(f"rewrote {entry}: model.onnx {manifest['onnx']['sha256'][:12]}…, {', '.join(documents)}")


if __name__ == "__main__":
    raise SystemExit(main())
