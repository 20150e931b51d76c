"""The named, parameterised steps a recipe is made of, and their validation.

A step records every parameter explicitly (defaults filled in), so a recipe written into a model's manifest
keeps meaning the same thing even if a default here changes later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from service.preprocessing.crop import crop_to_brain
from service.preprocessing.filters import Image, bilateral_filter, stretch_contrast

ParamValue = int | float
StepFunction = Callable[..., Image]


def _check_crop(p: Mapping[str, ParamValue]) -> None:
    if not 0 <= p["threshold"] <= 255:
        raise ValueError("crop_to_brain threshold must lie in 0..255.")
    if min(p["blur"], p["erode"], p["dilate"], p["margin"]) < 0:
        raise ValueError("crop_to_brain blur, erode, dilate and margin must not be negative.")
    if not 0.0 <= p["min_tissue_kept"] <= 1.0:
        raise ValueError("crop_to_brain min_tissue_kept must lie in 0..1.")


def _check_bilateral(p: Mapping[str, ParamValue]) -> None:
    if p["d"] < 1 or p["sigma_color"] <= 0 or p["sigma_space"] <= 0:
        raise ValueError("bilateral d must be at least 1 and its sigmas positive.")


def _check_contrast(p: Mapping[str, ParamValue]) -> None:
    if not 0.0 <= p["low_percentile"] < p["high_percentile"] <= 100.0:
        raise ValueError("contrast_stretch needs 0 <= low_percentile < high_percentile <= 100.")


@dataclass(frozen=True)
class _StepSpec:
    function: StepFunction
    defaults: Mapping[str, ParamValue]  # the type of each default is the parameter's type
    check: Callable[[Mapping[str, ParamValue]], None]


STEP_SPECS: Final[Mapping[str, _StepSpec]] = {
    "crop_to_brain": _StepSpec(
        crop_to_brain,
        {"blur": 5, "threshold": 45, "erode": 2, "dilate": 2, "margin": 0, "min_tissue_kept": 0.5},
        _check_crop,
    ),
    "bilateral": _StepSpec(
        bilateral_filter, {"d": 2, "sigma_color": 50.0, "sigma_space": 50.0}, _check_bilateral
    ),
    "contrast_stretch": _StepSpec(
        stretch_contrast, {"low_percentile": 1.0, "high_percentile": 99.0}, _check_contrast
    ),
}
STEP_NAMES: Final = tuple(STEP_SPECS)


def _coerce(step: str, key: str, value: Any, default: ParamValue) -> ParamValue:
    """JSON-safe typing: int parameters take ints only, float ones take ints or floats (kept as float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"Parameter {key!r} of step {step!r} must be a number, not {value!r}.")
    if isinstance(default, int):
        if not isinstance(value, int):
            raise ValueError(f"Parameter {key!r} of step {step!r} must be an integer, not {value!r}.")
        return value
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"Parameter {key!r} of step {step!r} must be finite.")
    return float(value)


@dataclass(frozen=True)
class Step:
    """One named step with all of its parameters, as sorted ``(name, value)`` pairs (hashable, comparable).

    Build one with ``Step.of("bilateral", d=3)``; unknown step names, unknown parameters or values of the
    wrong type raise ValueError.
    """

    name: str
    params: tuple[tuple[str, ParamValue], ...] = ()

    def __post_init__(self) -> None:
        spec = STEP_SPECS.get(self.name)
        if spec is None:
            raise ValueError(f"Unknown preprocessing step {self.name!r}; known: {', '.join(STEP_NAMES)}.")
        given = dict(self.params)
        unknown = sorted(set(given) - set(spec.defaults))
        if unknown or len(given) != len(self.params):
            raise ValueError(
                f"Step {self.name!r} got unknown or repeated parameters {unknown}; "
                f"it takes {', '.join(spec.defaults)}."
            )
        merged = {
            key: _coerce(self.name, key, given.get(key, default), default)
            for key, default in spec.defaults.items()
        }
        spec.check(merged)
        object.__setattr__(self, "params", tuple(sorted(merged.items())))

    @classmethod
    def of(cls, name: str, **params: ParamValue) -> Step:
        """The step ``name`` with ``params`` overriding its defaults."""
        return cls(name, tuple(params.items()))

    @property
    def kwargs(self) -> dict[str, ParamValue]:
        """The parameters as keyword arguments of the step's function."""
        return dict(self.params)

    def apply(self, image: Image) -> Image:
        """Run the step on an (H, W, 3) image."""
        return STEP_SPECS[self.name].function(image, **self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``, JSON-serialisable."""
        return {"name": self.name, "params": self.kwargs}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        """Inverse of :meth:`to_dict`; raises ValueError on anything it would not have written."""
        if not isinstance(data, Mapping) or set(data) - {"name", "params"} or "name" not in data:
            raise ValueError(f"A step must be a mapping with 'name' and 'params', not {data!r}.")
        params = data.get("params", {})
        if not isinstance(params, Mapping) or not isinstance(data["name"], str):
            raise ValueError(f"A step needs a string 'name' and a mapping 'params', not {data!r}.")
        return cls(data["name"], tuple(params.items()))
