"""Classification tasks and how folder labels map onto their classes.

- ``4class``: ``glioma``, ``meningioma``, ``no_tumor``, ``pituitary`` (a tumour of unknown type is left out).
- ``binary``: ``no_tumor`` vs ``tumor`` (every tumour type, and Br35H ``yes``, is ``tumor``).
- ``pairwise:<tumour>``: ``no_tumor`` vs that tumour type; other classes are left out.

For the two-class tasks ``no_tumor`` comes first, so class index 1 is always the tumour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from training.datasets import GLIOMA, MENINGIOMA, NO_TUMOR, PITUITARY, TUMOR, TUMOUR_TYPES
from training.errors import TrainingError

PAIRWISE_PREFIX = "pairwise:"
TASK_NAMES: tuple[str, ...] = ("4class", "binary", *(PAIRWISE_PREFIX + t for t in TUMOUR_TYPES))


class TaskError(TrainingError):
    """An unknown task name."""


@dataclass(frozen=True)
class Task:
    """A task: its classes in model-output order and the class of each source label (absent: left out)."""

    name: str
    classes: tuple[str, ...]
    class_of: Mapping[str, str]

    def label_for(self, source_label: str) -> str | None:
        """The task class of a source label, or None when the task leaves that label out."""
        return self.class_of.get(source_label)


@dataclass(frozen=True)
class LabelDecision:
    """The task label of one distinct image seen under one or more folder labels."""

    label: str | None
    """Task class; None when the image is left out (by the task, or for a conflict)."""
    conflict: bool = False
    """True when copies of the image carry labels that disagree under this task."""


def parse_task(name: str) -> Task:
    """The :class:`Task` called ``name`` (case-insensitive); else :class:`TaskError` naming the valid ones."""
    key = name.strip().lower()
    if key == "4class":
        return Task(key, (GLIOMA, MENINGIOMA, NO_TUMOR, PITUITARY), {c: c for c in (*TUMOUR_TYPES, NO_TUMOR)})
    if key == "binary":
        return Task(
            key, (NO_TUMOR, TUMOR), {NO_TUMOR: NO_TUMOR, TUMOR: TUMOR, **{t: TUMOR for t in TUMOUR_TYPES}}
        )
    if key.startswith(PAIRWISE_PREFIX) and key[len(PAIRWISE_PREFIX) :] in TUMOUR_TYPES:
        tumour = key[len(PAIRWISE_PREFIX) :]
        return Task(key, (NO_TUMOR, tumour), {NO_TUMOR: NO_TUMOR, tumour: tumour})
    raise TaskError(f"unknown task {name!r}; valid tasks are {', '.join(TASK_NAMES)}")


def decide_label(task: Task, source_labels: Iterable[str]) -> LabelDecision:
    """Resolve the folder labels of byte-identical copies into one task label.

    A tumour of unknown type (``tumor``) is refined by a copy that names the type. Copies whose labels map
    to different task classes, or of which some are left out by the task and some are not, are a conflict:
    the image cannot be trusted for this task and is dropped.
    """
    labels = set(source_labels)
    if TUMOR in labels and labels & set(TUMOUR_TYPES):
        labels.discard(TUMOR)
    mapped = {task.label_for(label) for label in labels}
    if len(mapped) == 1:
        return LabelDecision(mapped.pop())
    return LabelDecision(None, conflict=True)
