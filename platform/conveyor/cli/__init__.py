"""The ``conveyor`` command: :func:`main` parses, one module per command group runs."""

from conveyor.cli.main import main

__all__ = ["main"]
