"""Batches for Keras' ``fit`` and ``predict``: a ``keras.utils.PyDataset`` over cached uint8 arrays.

Works unchanged with every Keras backend. Shuffling and augmentation are seeded per (seed, epoch, batch), so a
run is reproducible whatever order Keras' workers (if any) fetch the batches in.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from training.augmentation import AUGMENTATIONS


class ImageBatches(keras.utils.PyDataset):
    """(x, y) batches: x (B, h, w, 3) float32 in [0, 255], y (B, C) one-hot float32."""

    def __init__(
        self,
        images: npt.NDArray[np.uint8],
        labels: npt.NDArray[np.int64],
        num_classes: int,
        batch_size: int,
        *,
        augment: str = "none",
        shuffle: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # workers, use_multiprocessing, max_queue_size
        if augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
        if batch_size < 1:
            raise ValueError(f"the batch size must be positive, got {batch_size}")
        self.images = images
        self.labels = labels
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.augmentation = AUGMENTATIONS[augment]
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self._order = self._epoch_order()

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        picks = self._order[index * self.batch_size : (index + 1) * self.batch_size]  # (B,)
        images = self.images[picks]  # (B, h, w, 3) uint8
        if self.augment != "none":
            rng = np.random.default_rng((self.seed, self.epoch, index))
            images = np.stack([self.augmentation(image, rng) for image in images])
        x = images.astype(np.float32)  # (B, h, w, 3)
        y = np.eye(self.num_classes, dtype=np.float32)[self.labels[picks]]  # (B, C)
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._epoch_order()

    def _epoch_order(self) -> npt.NDArray[np.int64]:
        count = len(self.labels)
        if not self.shuffle:
            return np.arange(count)
        return np.random.default_rng((self.seed, self.epoch)).permutation(count)
