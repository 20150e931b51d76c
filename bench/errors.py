"""The one error of the measuring tools: a sentence for the person who ran them, exit status 2."""

from __future__ import annotations


class BenchError(Exception):
    """A measurement cannot start or go on; the message says why in one sentence."""
