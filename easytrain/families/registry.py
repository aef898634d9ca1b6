"""The one place a family is chosen: the list of family packages, and what is asked of them.

Light at import (the wizard and `check` read the catalog entries, the memory
table and the detection signatures through it); a family's training side is
imported only when ``family_for`` is called. Adding a family: its package under
families/ and its name in PACKAGES.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Iterator, Optional

# In the catalog's (and the wizard's) order.
PACKAGES = ("sd", "sdxl")


def packages() -> list:
    return [import_module(f"easytrain.families.{name}") for name in PACKAGES]


def family_architectures() -> Iterator:
    """Every catalog entry (families.spec.Architecture), family by family."""
    for package in packages():
        yield from package.catalog.ARCHITECTURES


def family_memory() -> dict:
    """Architecture id -> the memory its step was traced to need (families.spec.ArchitectureMemory)."""
    table: dict = {}
    for package in packages():
        table.update(package.catalog.MEMORY)
    return table


def family_block_layouts() -> Iterator:
    """Every family's block numbering (network.blocks.BlockLayout), for block-wise settings."""
    for package in packages():
        yield from package.catalog.BLOCK_LAYOUTS


def signatures() -> list:
    """Each package's detection signature (light: headers, key names and configs only), in the order detection
    asks them: the first that knows a file decides; a signature with a higher PRIORITY is asked first."""
    return sorted((package.signature for package in packages()), key=lambda s: -getattr(s, "PRIORITY", 0))


def _families() -> dict:
    found = {}
    for package in packages():
        for family in package.families():
            found[family.family] = family
    return found


def registered_families() -> tuple[str, ...]:
    return tuple(_families())


def family_for(arch: str, path: Optional[Path] = None):
    """The Family (families/base.py) serving the catalog architecture ``arch``; UserError when none does yet."""
    from easytrain import catalog
    from easytrain.errors import UserError

    entry = catalog.architecture(arch)
    family = _families().get(entry.family)
    if family is None:
        where = f"{path}: " if path is not None else ""
        raise UserError(f"{where}this is an {entry.label} model; {entry.label} training is coming in a later "
                        "version of easytrain")
    return family


def config_folder(arch: str) -> Path:
    """The offline configs a family ships for ``arch`` (families/<package>/configs/<arch>)."""
    for package in packages():
        folder = Path(package.__file__).parent / "configs" / arch
        if folder.is_dir():
            return folder
    raise KeyError(f"no family ships configs for {arch!r}")
