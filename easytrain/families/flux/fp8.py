"""fp8 storage of the frozen base weights (kohya's ``--fp8_base``), computed in bf16.

A 12B transformer is 24 GB in bf16 and 12 GB in ``float8_e4m3fn``. ``store_in_fp8`` turns every
frozen ``nn.Linear`` of a model into an ``Fp8Linear`` (still an ``nn.Linear``: peft wraps it, and a
network already attached keeps working on top): its weight is kept in fp8 and upcast to the
compute dtype for each forward. The backward upcasts it again instead of keeping the bf16 copy the
forward made (kohya's autocast route keeps one per layer until the backward), so fp8 storage saves
memory in the backward too. Biases stay in their dtype (they are small). Rounding to fp8 happens
once, when the weights are stored; a model whose weights were rounded to fp8 beforehand computes
the same numbers.

Attach the network first: peft puts a new adapter in the dtype of the weight it wraps, so an adapter
created on an fp8 layer would start from fp8-rounded values.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn


class _Fp8Matmul(torch.autograd.Function):
    """x @ W.T + b with W stored in fp8; only x gets a gradient (the base weights are frozen)."""

    @staticmethod
    def forward(ctx, x, weight, bias, dtype):
        ctx.save_for_backward(weight)
        ctx.dtype, ctx.x_dtype = dtype, x.dtype
        return F.linear(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        grad_x = grad.to(ctx.dtype).matmul(weight.to(ctx.dtype)) if ctx.needs_input_grad[0] else None
        return (None if grad_x is None else grad_x.to(ctx.x_dtype)), None, None, None


class Fp8Linear(nn.Linear):
    """An ``nn.Linear`` whose (frozen) weight is stored in float8_e4m3fn and computed in ``compute_dtype``."""

    compute_dtype: torch.dtype = torch.bfloat16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _autocast_dtype(x.device) or self.compute_dtype
        if self.weight.requires_grad:
            raise RuntimeError("an fp8-stored weight cannot be trained; train a network on top of it")
        return _Fp8Matmul.apply(x, self.weight, self.bias, dtype)


def _autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    kind = device.type
    try:
        if torch.is_autocast_enabled(kind):
            return torch.get_autocast_dtype(kind)
    except (RuntimeError, TypeError):
        pass
    return None


def round_to_fp8(weight: torch.Tensor) -> torch.Tensor:
    """The weight as fp8 stores it, back in its own dtype: what an fp8-stored layer computes with."""
    return weight.to(FP8).to(weight.dtype)


def store_in_fp8(model: nn.Module, *, compute_dtype: torch.dtype = torch.bfloat16,
                 include: Optional[Callable[[str, nn.Linear], bool]] = None) -> int:
    """Every frozen ``nn.Linear`` of ``model`` (that ``include(path, module)`` accepts) stored in fp8, in place.

    The network's own Linears (trainable) are left alone. Returns how many layers were converted.
    """
    count = 0
    for path, module in model.named_modules():
        if type(module) is not nn.Linear or module.weight.requires_grad:
            continue
        if include is not None and not include(path, module):
            continue
        module.weight.data = module.weight.data.to(FP8)
        module.__class__ = Fp8Linear
        module.compute_dtype = compute_dtype
        count += 1
    return count


def fp8_bytes(model: nn.Module) -> int:
    """The bytes of ``model``'s parameters as stored (fp8 weights count one byte each)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())
