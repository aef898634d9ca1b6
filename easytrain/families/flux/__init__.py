"""Flux.1 [dev], Flux.1 [schnell] and Chroma: a flow-matching transformer in Black Forest Labs' layout,
CLIP-L (not for Chroma) and T5-XXL text encoders, a 16-channel AE, trained as kohya's flux_train_network.py.

Light at import: ``catalog``, ``signature`` and ``questions`` are read by the wizard and ``check``;
``families()`` imports the training side.
"""

from easytrain.families.flux import catalog, signature

__all__ = ["catalog", "signature", "families"]


def families() -> tuple:
    from easytrain.families.flux.family import Flux

    return (Flux(),)
