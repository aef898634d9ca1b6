"""A frozen model that keeps its weights in the file's precision and computes in another.

Each submodule's own parameters are cast just before its forward and put back just after, so at most one
layer's weights exist in the computing precision at a time. The values are those the model would have
had with every weight converted once up front (the same cast, made later), so the outputs are the same;
what is saved is the converted copy of the whole model, written once and kept for the whole run. Meant
for frozen encoders that run once (text encoders whose outputs are cached); a model that runs every step
is better converted once.
"""

from __future__ import annotations

import torch


def compute_in(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Hooks on every submodule of ``model`` holding floating-point parameters in another precision than
    ``dtype``; returns how many submodules got them."""
    hooked = 0
    for module in model.modules():
        names = tuple(name for name, param in module._parameters.items()
                      if param is not None and param.is_floating_point() and param.dtype != dtype)
        if not names:
            continue
        module._computes_in = dtype
        if type(module) is torch.nn.Embedding:
            # a lookup: the rows it picks, cast, are the rows of the cast table (CLIP's token table is 150 MB
            # and 250 MB in fp32, for 77 rows)
            module.register_forward_hook(_casting_out(dtype))
        else:
            module.register_forward_pre_hook(_casting_in(names, dtype))
            module.register_forward_hook(_putting_back)
        hooked += 1
    return hooked


def _casting_out(dtype: torch.dtype):
    def cast(_module, _args, output: torch.Tensor) -> torch.Tensor:
        return output.to(dtype)
    return cast


def computing_dtype(module: torch.nn.Module) -> torch.dtype:
    """The precision ``module`` computes in: its weights' own, or the one ``compute_in`` gave it."""
    return getattr(module, "_computes_in", None) or next(module.parameters()).dtype


def _casting_in(names: tuple[str, ...], dtype: torch.dtype):
    def cast(module, _args) -> None:
        stored = {}
        for name in names:
            param = module._parameters[name]
            stored[name] = param.data
            param.data = param.data.to(dtype)
        module._stored_weights = stored
    return cast


def _putting_back(module, _args, _output) -> None:
    for name, data in module.__dict__.pop("_stored_weights", {}).items():
        module._parameters[name].data = data
