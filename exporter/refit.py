"""`python -m exporter.refit ENTRY`: fit (again) the calibration and input-validity check of an entry.

The entry's graph loses any trust head it had and gets a new one (:mod:`exporter.trust`); ``model.onnx``,
the manifest's ``calibration``, ``input_validity`` and ONNX record, and the trust documents are replaced in
one atomic rename, after the same checks as an export. ``--gradcam METHOD@LAYER`` also changes the heat map
the entry serves (``--gradcam-only``: that alone, the graph untouched). The Keras twin is not touched.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from exporter.cli import heatmap_argument
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
    add("--gradcam", type=heatmap_argument, metavar="METHOD@LAYER",
        help="also switch the entry's heat map, e.g. layercam@block6d_expand_activation")  # fmt: skip
    add("--gradcam-only", action="store_true",
        help="switch the heat map (--gradcam) only; graph, calibration and input validity stay")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Refit one entry; an :class:`ExportError` is one sentence with exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.gradcam_only and args.gradcam is None:
        parser.error("--gradcam-only needs --gradcam METHOD@LAYER")
    command = "python -m exporter.refit " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        refit_entry(
            args.entry,
            args.bank_split,
            args.ood_layer,
            args.split,
            command,
            heatmap=args.gradcam,
            trust=not args.gradcam_only,
        )
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
    *,
    heatmap: tuple[str, str] | None = None,
    trust: bool = True,
) -> None:
    """Replace the trust head of ``entry`` (unless not ``trust``) and its heat map (when ``heatmap`` is
    given); see the module docstring."""
    import keras
    import onnx

    from exporter.entry import publish, staged_entry
    from exporter.export import check_heatmap_layer
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
    model = keras.models.load_model(entry / KERAS_FILE, compile=False)
    if heatmap is not None:
        check_heatmap_layer(model, heatmap[1])
    fit = None
    if trust:
        own_split = split or Path(manifest["evaluation"]["split"]["path"])
        if not own_split.is_file():
            raise ExportError(f"the entry's split {own_split} cannot be found; pass it with --split")
        recipe = Recipe.from_dict(manifest["preprocessing"])
        proto = strip_trust_head(onnx.load(str(entry / ONNX_FILE)))
        chosen = list(layers or default_layers(manifest["backbone"], manifest["keras"]["gradcam_layer"]))
        data = load_trust_data(own_split, bank_splits, recipe)
        fit = fit_trust(proto, model, data, chosen, say=say)
    with staged_entry(entry.parent, entry.name, True) as (staging, target):
        for item in entry.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
        documents: list[str] = []
        if fit is not None:
            onnx.save(fit.proto, str(staging / ONNX_FILE))
            documents = write_trust_documents(staging, fit, manifest["name"])
            manifest["onnx"].update(file_record(staging / ONNX_FILE))
            manifest["calibration"] = fit.calibration
            manifest["input_validity"] = fit.input_validity
            manifest["documents"] = [
                *[d for d in manifest.get("documents", []) if d not in documents],
                *documents,
            ]
        if heatmap is not None:
            manifest["keras"]["gradcam_method"], manifest["keras"]["gradcam_layer"] = heatmap
        earlier = manifest.get("refit") or {}
        history = [*earlier.get("earlier", []), earlier["command"]] if "command" in earlier else []
        manifest["refit"] = {"command": command, **({"earlier": history} if history else {})}
        problems = validate_manifest(manifest, staging)
        if problems:
            raise ExportError("the refitted manifest would be invalid: " + " ".join(problems))
        write_manifest(staging / MANIFEST_FILE, manifest)
        publish(staging, target, True)
    heat = f"{manifest['keras'].get('gradcam_method', 'gradcam')}@{manifest['keras']['gradcam_layer']}"
    say(f"rewrote {entry}: model.onnx {manifest['onnx']['sha256'][:12]}…, heat map {heat}, "
        f"{', '.join(documents) or 'graph unchanged'}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
