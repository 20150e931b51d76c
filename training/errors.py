"""The one error base class of the training tools: a clear sentence for the user, exit status 2 on the CLI."""

from __future__ import annotations


class TrainingError(Exception):
    """Bad input to a training command (data, task, ratios, manifest); the message is shown as is."""
