"""Architecture family -> adapter: the one place an architecture is chosen."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from easytrain import catalog
from easytrain.arch.base import Adapter
from easytrain.errors import UserError


def _adapters() -> dict[str, Adapter]:
    from easytrain.arch.sd import SD1, SD2
    from easytrain.arch.sdxl import SDXL

    return {adapter.family: adapter for adapter in (SD1(), SD2(), SDXL())}


def registered_families() -> tuple[str, ...]:
    return tuple(_adapters())


def adapter_for(arch: str, path: Optional[Path] = None) -> Adapter:
    """The adapter serving the catalog architecture ``arch``; a clear UserError when none does yet."""
    entry = catalog.architecture(arch)
    adapter = _adapters().get(entry.family)
    if adapter is None:
        where = f"{path}: " if path is not None else ""
        raise UserError(f"{where}this is an {entry.label} model; {entry.label} training is coming in a later "
                        "version of easytrain")
    return adapter
