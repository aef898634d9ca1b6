"""SD1.x and SD2.x: one CLIP text encoder, a UNet, the DDPM objective (epsilon, or v for SD2 768-v).

Light at import: ``catalog`` and ``signature`` are read by the wizard; ``families()``
imports the training side.
"""

from easytrain.families.sd import catalog, signature

__all__ = ["catalog", "signature", "families"]


def families() -> tuple:
    from easytrain.families.sd.family import SD1, SD2

    return SD1(), SD2()
