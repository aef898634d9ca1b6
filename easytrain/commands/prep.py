"""Dataset preparation commands (`tags`, `images`); filled in by the preparation tools."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the preparation subcommands; each sets ``handler`` to a function of the parsed args."""
