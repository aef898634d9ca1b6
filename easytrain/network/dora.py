"""DoRA (weight-decomposed LoRA) in the layout A1111, Forge and ComfyUI apply.

Those clients read a ``dora_scale`` tensor next to ``lora_up``/``lora_down`` and
rebuild the weight as (LyCORIS's default, magnitude per INPUT column):

    W' = (W + s * up @ down) * dora_scale / ||W + s * up @ down||_col

where ||.||_col is the norm of each input column (over the output axis and the
kernel), s = alpha / dim, and dora_scale has shape (1, in) for a Linear layer and
(1, in, 1, 1) for a conv. peft's own DoRA keeps one magnitude per OUTPUT row,
which those clients would apply wrongly, so the layers here are plain peft LoRA
layers plus a magnitude parameter: scaling input column i of a weight equals
scaling input channel i of x, so each adapted layer's input is multiplied by
dora_scale / ||W + delta||_col before the layer runs. As in the DoRA paper and
peft, the norm is treated as a constant for the gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from easytrain.network.build import ADAPTER_NAME

PARAM = "dora_scale"


def _merged(layer: nn.Module) -> torch.Tensor:
    base = layer.get_base_layer().weight
    return base.float() + layer.get_delta_weight(ADAPTER_NAME).float().reshape(base.shape)


def column_norm(weight: torch.Tensor) -> torch.Tensor:
    """||W||_col: one norm per input column (dim 1), shape (in,)."""
    return weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)


def _scale_input(layer: nn.Module, args: tuple) -> tuple:
    x, rest = args[0], args[1:]
    with torch.no_grad():
        norm = column_norm(_merged(layer))
    factor = getattr(layer, PARAM) / norm
    shape = (1, -1) + (1,) * (x.ndim - 2) if isinstance(layer.get_base_layer(), nn.Conv2d) else (-1,)
    return (x * factor.view(shape).to(x.dtype),) + rest


def attach(layer: nn.Module) -> nn.Parameter:
    """Give a peft LoRA layer a DoRA magnitude (initialised so the layer is unchanged) and its input hook."""
    with torch.no_grad():
        magnitude = column_norm(_merged(layer))
    param = nn.Parameter(magnitude.float())
    layer.register_parameter(PARAM, param)
    layer.register_forward_pre_hook(_scale_input)
    return param


def has_dora(layer: nn.Module) -> bool:
    return isinstance(getattr(layer, PARAM, None), nn.Parameter)


def file_tensor(layer: nn.Module) -> torch.Tensor:
    """The magnitude as the clients read it: (1, in) for Linear, (1, in, 1, 1) for a conv."""
    magnitude = getattr(layer, PARAM).detach().float()
    extra = (1, 1) if isinstance(layer.get_base_layer(), nn.Conv2d) else ()
    return magnitude.view(1, -1, *extra)


@torch.no_grad()
def load_file_tensor(layer: nn.Module, tensor: torch.Tensor) -> None:
    param = getattr(layer, PARAM)
    param.copy_(tensor.reshape(-1).to(device=param.device, dtype=param.dtype))
