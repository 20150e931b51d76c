"""The one error base class of the exporter: a clear sentence for the user, exit status 2 on the CLI."""

from __future__ import annotations


class ExportError(Exception):
    """An export that cannot go on (bad run directory, split, name); the message is shown as is."""


class ConversionError(ExportError):
    """The ONNX graph is not the model the manifest describes: wrong names, fixed batch, failed parity."""


class ManifestError(ExportError):
    """A manifest that cannot be read, or that fails validation; the message lists the problems."""
