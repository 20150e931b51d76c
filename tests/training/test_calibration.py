"""The ECE a perfectly calibrated model would show: the yardstick for an ECE measured on a small test set."""

from __future__ import annotations

import numpy as np

from training.calibration import ece_if_calibrated, expected_calibration_error


def _confident(n: int, seed: int) -> np.ndarray:
    """(n, 4) probabilities with a top class of 0.6-0.99, as a trained 4-class model gives."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.6, 0.99, n)
    rest = rng.dirichlet(np.ones(3), n) * (1 - top)[:, None]
    return np.column_stack([top, rest])


def test_the_floor_is_what_calibrated_labels_score_and_shrinks_with_more_images() -> None:
    small, large = _confident(300, 1), _confident(3000, 1)
    floor_small, floor_large = ece_if_calibrated(small), ece_if_calibrated(large)
    assert 0.0 < floor_large["median"] < floor_small["median"] < floor_small["p90"]
    assert floor_small["median"] > 0.015  # 300 images cannot show an ECE of 0.01 even when calibrated
    # labels drawn from the probabilities themselves land in the floor's range
    rng = np.random.default_rng(5)
    draws = [np.array([rng.choice(4, p=p) for p in small]) for _ in range(40)]
    drawn = [expected_calibration_error(small, labels) for labels in draws]
    assert abs(float(np.median(drawn)) - floor_small["median"]) < 0.006
    # and a model right 0.2 less often than it says lies far above it
    right = rng.random(300) < small[:, 0] - 0.2
    overconfident = expected_calibration_error(small, np.where(right, 0, 1))
    assert overconfident > 0.15 > floor_small["p90"]


def test_the_floor_is_reproducible_and_empty_input_is_zero() -> None:
    probabilities = _confident(200, 2)
    assert ece_if_calibrated(probabilities) == ece_if_calibrated(probabilities)
    assert ece_if_calibrated(np.zeros((0, 4)))["median"] == 0.0
