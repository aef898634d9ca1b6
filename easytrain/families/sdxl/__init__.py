"""SDXL and its families (Pony, Illustrious, NoobAI eps and v-pred): two text encoders, added conditioning.

Light at import: ``catalog`` and ``signature`` are read by the wizard; ``families()``
imports the training side.
"""

from easytrain.families.sdxl import catalog, signature

__all__ = ["catalog", "signature", "families"]


def families() -> tuple:
    from easytrain.families.sdxl.family import SDXL

    return (SDXL(),)
