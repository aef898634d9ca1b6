"""Per-layer conversion between peft's adapter weights and kohya/LyCORIS keys.

- LoRA/LoCon: ``<name>.lora_down.weight`` (peft lora_A), ``<name>.lora_up.weight``
  (peft lora_B), conv weights 4-D, ``<name>.alpha``; delta = up @ down * alpha / dim.
- LoHa: ``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``, ``alpha``;
  delta = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / dim.
- LoKr: ``lokr_w1`` or ``lokr_w1_a``/``lokr_w1_b``, ``lokr_w2`` or
  ``lokr_w2_a``/``lokr_w2_b``, ``alpha``; delta = kron(w1, w2) * alpha / dim,
  where dim is the rank of the decomposed factor. When neither factor is
  decomposed, LyCORIS, A1111 and ComfyUI apply scale 1 and ignore alpha, so peft's
  scale is folded into ``lokr_w2`` and alpha is written as the rank.
``alpha`` is always written: A1111 and ComfyUI apply a file without it at a
different strength.
"""

from __future__ import annotations

import torch

from easytrain.network.build import ADAPTER_NAME, Slot

LOHA_PARAMS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR_PARAMS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")


def _lycoris_params(slot: Slot, names: tuple[str, ...]) -> dict[str, torch.nn.Parameter]:
    found = {}
    for name in names:
        store = getattr(slot.layer, name)
        if ADAPTER_NAME in store:
            found[name] = store[ADAPTER_NAME]
    return found


def _lokr_is_full(params: dict) -> bool:
    return "lokr_w1" in params and "lokr_w2" in params


def peft_tensors(slot: Slot, network_type: str) -> dict[str, torch.nn.Parameter]:
    """The slot's adapter parameters under their kohya suffixes (without ``alpha``)."""
    if network_type in ("LoRA", "LoCon"):
        return {
            "lora_down.weight": slot.layer.lora_A[ADAPTER_NAME].weight,
            "lora_up.weight": slot.layer.lora_B[ADAPTER_NAME].weight,
        }
    if network_type == "LoHa":
        return _lycoris_params(slot, LOHA_PARAMS)
    return _lycoris_params(slot, LOKR_PARAMS)


def _peft_scale(slot: Slot) -> float:
    return float(slot.layer.scaling[ADAPTER_NAME])


def slot_to_kohya(slot: Slot, network_type: str) -> dict[str, torch.Tensor]:
    """kohya keys -> tensors (fp32, on the layer's device) for one adapted layer."""
    name = slot.target.kohya_name
    params = peft_tensors(slot, network_type)
    tensors = {k: p.detach().float() for k, p in params.items()}
    alpha = slot.alpha
    if network_type == "LoKr" and _lokr_is_full(params):
        tensors["lokr_w2"] = tensors["lokr_w2"] * _peft_scale(slot)
        alpha = float(slot.dim)
    out = {f"{name}.{suffix}": t for suffix, t in tensors.items()}
    out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def file_rank(network_type: str, tensors: dict[str, torch.Tensor]) -> int | None:
    """The rank a reader infers from a file's tensors for one module (None: not decomposed)."""
    if network_type in ("LoRA", "LoCon"):
        return tensors["lora_down.weight"].shape[0]
    if network_type == "LoHa":
        return tensors["hada_w1_b"].shape[0]
    for key in ("lokr_w1_b", "lokr_w2_b"):
        if key in tensors:
            return tensors[key].shape[0]
    return None


# The factor that scales the whole delta linearly, per type: rescaling it rescales the delta.
_LINEAR_FACTOR = {"LoRA": "lora_up.weight", "LoCon": "lora_up.weight", "LoHa": "hada_w2_a"}


@torch.no_grad()
def kohya_to_slot(slot: Slot, network_type: str, tensors: dict[str, torch.Tensor], alpha: float | None) -> None:
    """Copy one module's file tensors (suffix -> tensor, shapes already checked) into the slot.

    The file's own alpha decides the strength it was saved with; when it differs
    from this network's alpha the weights are rescaled so the loaded delta
    equals the file's. A file without alpha means scale 1 (as A1111/ComfyUI read it).
    """
    params = peft_tensors(slot, network_type)
    for suffix, param in params.items():
        param.copy_(tensors[suffix].to(device=param.device, dtype=param.dtype))
    ours = _peft_scale(slot)
    if network_type == "LoKr" and _lokr_is_full(params):
        params["lokr_w2"].div_(ours)
        return
    rank = file_rank(network_type, tensors)
    theirs = 1.0 if alpha is None else alpha / rank
    if theirs == ours:
        return
    factor_name = _LINEAR_FACTOR.get(network_type) or ("lokr_w1" if "lokr_w1" in params else "lokr_w1_a")
    params[factor_name].mul_(theirs / ours)
