"""Subcommands of ``python -m training``, one module each (registered in :mod:`training.cli`)."""
