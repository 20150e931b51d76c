"""The model repository: every ``<repository>/<name>/`` entry validated, opened in ONNX Runtime and warmed.

Start-up order: :func:`open_model_repository` validates each manifest (with the sha256 of its files) and
opens one ONNX Runtime session per model, raising :class:`ModelRepositoryError` with one sentence when the
repository is missing, empty or corrupt; :meth:`ModelRepository.warm_up` then runs a dummy batch through each
session and sets ``ready``. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from exporter.errors import ManifestError
from exporter.manifest import MANIFEST_FILE, load_entry
from service.errors import UnknownModelError, client_text
from service.preprocessing import Recipe

logger = logging.getLogger("service.models")

CUDA_PROVIDER: Final = "CUDAExecutionProvider"
CPU_PROVIDER: Final = "CPUExecutionProvider"
EXPORT_HINT: Final = "export one with `python -m exporter RUN_DIR --repository {path} --name NAME`"


class ModelRepositoryError(Exception):
    """The repository cannot be served; the message is one sentence for the operator (no traceback)."""


@dataclass(frozen=True)
class SessionConfig:
    """ONNX Runtime session options that come from the settings."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    allow_spinning: bool = False


@dataclass
class ServedModel:
    """One repository entry: its manifest, its ONNX Runtime session once loaded, ``ready`` once warmed."""

    name: str
    version: str
    task: str
    classes: tuple[str, ...]
    recipe: Recipe
    manifest: dict[str, Any]
    entry_dir: Path
    session: ort.InferenceSession | None = field(default=None, repr=False)
    provider: str = CPU_PROVIDER
    ready: bool = False

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], entry_dir: Path) -> ServedModel:
        """A not-yet-loaded model from a validated manifest."""
        return cls(
            name=manifest["name"],
            version=manifest["version"],
            task=manifest["task"],
            classes=tuple(manifest["classes"]),
            recipe=Recipe.from_dict(manifest["preprocessing"]),
            manifest=manifest,
            entry_dir=entry_dir,
        )

    @property
    def onnx_path(self) -> Path:
        return self.entry_dir / str(self.manifest["onnx"]["file"])

    @property
    def onnx_sha256(self) -> str:
        return str(self.manifest["onnx"]["sha256"])

    @property
    def keras_path(self) -> Path:
        return self.entry_dir / str(self.manifest["keras"]["file"])

    @property
    def gradcam_layer(self) -> str:
        return str(self.manifest["keras"]["gradcam_layer"])

    @property
    def gradcam_method(self) -> str:
        """How the heat map weights the layer (``keras.gradcam_method``; plain Grad-CAM when absent)."""
        return str(self.manifest["keras"].get("gradcam_method", "gradcam"))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image."""
        spec = self.manifest["input"]
        return int(spec["height"]), int(spec["width"]), int(spec["channels"])

    def load(self, config: SessionConfig) -> None:
        """Open the ONNX Runtime session (CUDA when this build has it, else CPU) and check its tensors."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = config.inter_op_threads
        # spinning idle threads would take the cores that decoding and preprocessing need (unless asked for)
        spinning = "1" if config.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        options.log_severity_level = 3
        providers = [CPU_PROVIDER]
        if CUDA_PROVIDER in ort.get_available_providers():
            providers.insert(0, CUDA_PROVIDER)
        session = ort.InferenceSession(str(self.onnx_path), sess_options=options, providers=providers)
        inputs = [tensor.name for tensor in session.get_inputs()]
        outputs = [tensor.name for tensor in session.get_outputs()]
        wanted_input, wanted_output = self.manifest["onnx"]["input"], self.manifest["onnx"]["output"]
        validity = self.manifest.get("input_validity")
        if validity and str(validity["output"]) not in outputs:
            raise ModelRepositoryError(
                f"The ONNX graph of model {self.name} has no output {validity['output']!r}, which its "
                "manifest's "
                "input-validity check reads; refit it with `python -m exporter.refit`."
            )
        if inputs != [wanted_input] or wanted_output not in outputs:
            raise ModelRepositoryError(
                f"The ONNX graph of model {self.name} has inputs {inputs} and outputs {outputs}, "
                f"not the input {wanted_input!r} and output {wanted_output!r} of its manifest."
            )
        self.session = session
        self.provider = session.get_providers()[0]
        logger.debug(
            "model %s %s opened with providers %s",
            self.name,
            self.version,
            session.get_providers(),
            extra={"model": self.name, "version": self.version, "providers": session.get_providers()},
        )

    def warm_up(self) -> None:
        """Run one dummy image through the session: first runs allocate memory and pick kernels."""
        height, width, channels = self.input_shape
        self.predict(np.zeros((1, height, width, channels), dtype=np.float32))

    @property
    def ood_threshold(self) -> float | None:
        """Input-validity scores above this are refused; None when the entry has no check."""
        validity = self.manifest.get("input_validity")
        return None if not validity else float(validity["threshold"])

    @property
    def temperature(self) -> float | None:
        """The calibration temperature folded into the graph's probabilities (None: uncalibrated)."""
        calibration = self.manifest.get("calibration")
        return None if not calibration else float(calibration["temperature"])

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(N, height, width, 3) float32 in [0, 255] -> (N, C) class probabilities."""
        return self.run(batch)[0]

    def run(
        self, batch: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        """One ONNX Runtime run: (N, C) class probabilities and the (N,) input-validity scores (None without
        a check)."""
        if self.session is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        names = [self.manifest["onnx"]["output"]]
        validity = self.manifest.get("input_validity")
        if validity:
            names.append(str(validity["output"]))
        outputs = self.session.run(names, {self.manifest["onnx"]["input"]: batch})
        scores = None if len(outputs) == 1 else np.asarray(outputs[1], dtype=np.float32).reshape(-1)  # (N,)
        return self._as_probabilities(outputs[0]), scores

    def _as_probabilities(self, raw: object) -> npt.NDArray[np.float32]:
        probabilities = np.asarray(raw, dtype=np.float32)  # (N, C) or (N, 1) for a sigmoid
        if probabilities.ndim == 2 and probabilities.shape[1] == 1 and len(self.classes) == 2:
            probabilities = np.concatenate([1.0 - probabilities, probabilities], axis=1)  # (N, 2)
        if probabilities.ndim != 2 or probabilities.shape[1] != len(self.classes):
            raise RuntimeError(
                f"model {self.name} answered shape {probabilities.shape}, not (N, {len(self.classes)})"
            )
        return probabilities


@dataclass
class ModelRepository:
    """Every model of the repository by name, and the one that answers when a request names none."""

    path: Path
    models: Mapping[str, ServedModel]
    default_name: str
    warm_up_error: str | None = None

    @property
    def ready(self) -> bool:
        """True once every model is loaded and warmed."""
        return all(model.ready for model in self.models.values())

    def get(self, name: str | None) -> ServedModel:
        """The model called ``name`` (the default one for None); :class:`UnknownModelError` otherwise."""
        key = self.default_name if name is None else name
        model = self.models.get(key)
        if model is None:
            raise UnknownModelError(
                f"There is no model {client_text(key)}; the models served here are: "
                f"{', '.join(sorted(self.models))}."
            )
        return model

    def warm_up(self, before_ready: Callable[[ServedModel], None] | None = None) -> None:
        """Warm every model (and run ``before_ready`` on it), then mark it ``ready``.

        A failure is kept in :attr:`warm_up_error` (readiness stays 503) and logged.
        """
        for model in self.models.values():
            if model.ready:
                continue
            started = time.perf_counter()
            try:
                model.warm_up()
                if before_ready is not None:
                    before_ready(model)
                model.ready = True
            except Exception as error:  # the service stays live and says why it is not ready
                self.warm_up_error = f"Model {model.name} failed its warm-up run: {error}"
                logger.exception("warm-up of model %s failed", model.name)
                return
            logger.info(
                "model %s warmed in %.0f ms",
                model.name,
                (time.perf_counter() - started) * 1000,
                extra={"model": model.name},
            )


def open_model_repository(path: Path, default_model: str | None, config: SessionConfig) -> ModelRepository:
    """Validate every entry under ``path`` and open its session (not yet warmed).

    Raises :class:`ModelRepositoryError` with one sentence when ``path`` is missing or holds no entry, when
    an entry's manifest is invalid or its files do not match their sha256, when ONNX Runtime cannot open a
    graph, or when ``default_model`` is not one of the entries.
    """
    hint = EXPORT_HINT.format(path=path)
    if not path.is_dir():
        raise ModelRepositoryError(f"The model repository {path.resolve()} does not exist: {hint}.")
    # dot-folders are the exporter's staging areas
    entries = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    entries = [entry for entry in entries if (entry / MANIFEST_FILE).is_file()]
    if not entries:
        raise ModelRepositoryError(f"The model repository {path.resolve()} holds no model: {hint}.")
    models: dict[str, ServedModel] = {}
    for model in [_open_entry(entry) for entry in entries]:  # every manifest is checked before any session
        try:
            model.load(config)
        except ModelRepositoryError:
            raise
        except Exception as error:  # ONNX Runtime raises its own types (Fail, InvalidGraph...)
            raise ModelRepositoryError(
                f"ONNX Runtime cannot open {model.onnx_path} of model {model.name}: {error}"
            ) from None
        models[model.name] = model
    if default_model is not None and default_model not in models:
        raise ModelRepositoryError(
            f"MRI_DEFAULT_MODEL names {default_model!r}, which is not in the model repository "
            f"{path.resolve()} (it holds {', '.join(models)})."
        )
    return ModelRepository(path=path, models=models, default_name=default_model or _natural_default(models))


def _natural_default(models: dict[str, ServedModel]) -> str:
    """Without MRI_DEFAULT_MODEL: the first 4-class model by name (the main task), else the first."""
    four_class = [name for name, model in models.items() if model.task == "4class"]
    return (four_class or list(models))[0]


def _open_entry(entry: Path) -> ServedModel:
    try:
        manifest = load_entry(entry)
    except ManifestError as error:
        reason = str(error).rstrip(".")
        raise ModelRepositoryError(f"The model repository cannot be served because {reason}.") from None
    try:
        return ServedModel.from_manifest(manifest, entry)
    except ValueError as error:
        raise ModelRepositoryError(
            f"The model entry {entry} has an invalid preprocessing recipe: {error}"
        ) from None
