"""Training-time augmentation presets of the seeds, in NumPy and OpenCV (no framework ops).

- ``none``: the image as is;
- ``seed003``: rotation in ±10°, shift up to 5 % of each side, horizontal flip half the time (Keras'
  ``ImageDataGenerator(rotation_range=10, width_shift_range=0.05, height_shift_range=0.05,
  horizontal_flip=True)`` with its default edge fill, ``nearest``);
- ``seed004``: a rotation by 0, 90, 180 or 270° (0 or 180° for a non-square image), then horizontal and
  vertical flips, each half the time.

Each function takes one (h, w, 3) uint8 image and a seeded ``numpy.random.Generator`` and returns a new
(h, w, 3) uint8 image.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Augmentation = Callable[[Image, np.random.Generator], Image]

SEED003_ROTATION_DEG = 10.0
SEED003_SHIFT = 0.05


def no_augmentation(image: Image, rng: np.random.Generator) -> Image:
    return image


def seed003(image: Image, rng: np.random.Generator) -> Image:
    """Random rotation ±10°, shift ±5 %, horizontal flip; edges repeat the border pixels."""
    height, width = image.shape[:2]
    angle = rng.uniform(-SEED003_ROTATION_DEG, SEED003_ROTATION_DEG)
    shift = rng.uniform(-SEED003_SHIFT, SEED003_SHIFT, size=2) * (width, height)  # (dx, dy) pixels
    rotation = np.asarray(cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, 1.0))  # (2, 3)
    matrix = rotation + np.array([[0.0, 0.0, shift[0]], [0.0, 0.0, shift[1]]])  # (2, 3)
    out = cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )  # (h, w, 3)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def seed004(image: Image, rng: np.random.Generator) -> Image:
    """Random quarter-turn rotation (half-turns only when not square) and horizontal / vertical flips."""
    square = image.shape[0] == image.shape[1]
    turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    out = np.rot90(image, turns)  # (h, w, 3)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1]
    return np.ascontiguousarray(out)


AUGMENTATIONS: dict[str, Augmentation] = {"none": no_augmentation, "seed003": seed003, "seed004": seed004}
AUGMENTATION_NAMES: tuple[str, ...] = tuple(AUGMENTATIONS)
