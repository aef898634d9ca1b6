"""Keep diffusers and peft from importing bitsandbytes, which easytrain never asks them to use.

Both import bitsandbytes whenever it is installed: diffusers with its model code (for its quantized-model
loading), peft each time it wraps a layer (to recognise bitsandbytes' quantized layers). bitsandbytes'
import compiles a few CPU fallbacks with ``torch.compile``, which imports torch's inductor: about 1 s of a
run's start-up, and an attempt to fetch optional kernels. easytrain loads no quantized layers through
either (Flux's fp8 storage is its own, families/flux/fp8.py) and imports bitsandbytes itself when an 8-bit
optimizer needs it (train/optimizers.py).

Each function tells its library the package is absent, through the flag that library reads. Where the
flag is not there (another release), nothing changes: the run imports bitsandbytes as before.
"""

from __future__ import annotations

import sys


def _absent() -> bool:
    return False


def diffusers_without_bitsandbytes() -> bool:
    """Before diffusers' model code is first imported. True when diffusers will not import bitsandbytes."""
    if "diffusers.quantizers" in sys.modules:   # too late: diffusers has decided
        return "bitsandbytes" not in sys.modules
    try:
        import diffusers.utils.import_utils as availability
    except ImportError:
        return False
    if not hasattr(availability, "_bitsandbytes_available"):
        return False
    availability._bitsandbytes_available = False
    return True


def peft_without_bitsandbytes() -> bool:
    """Before peft wraps a layer. True when peft's LoRA will not import bitsandbytes to wrap one."""
    try:
        import peft.tuners.lora.model as lora_model
    except ImportError:
        return False
    names = ("is_bnb_available", "is_bnb_4bit_available")
    if not all(callable(getattr(lora_model, name, None)) for name in names):
        return False
    for name in names:
        setattr(lora_model, name, _absent)
    return True
