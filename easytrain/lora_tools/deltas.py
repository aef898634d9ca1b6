"""The weight change one module of a LoRA file makes, as AUTOMATIC1111 and ComfyUI compute it.

- LoRA / LoCon: up @ down * alpha / rank (convs: flattened, reshaped to the weight);
  with ``lora_mid`` (LoCon's Tucker form) the core is contracted between them.
- LoHa: (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank, rank = w1_b's rows; with
  ``hada_t1``/``hada_t2`` each factor is rebuilt through its Tucker core.
- LoKr: kron(w1, w2) * alpha / rank where a factor is given as ``_a @ _b`` (rank =
  that ``_b``'s rows); when neither factor is decomposed the scale is 1 and alpha is
  ignored (LyCORIS, A1111 and ComfyUI all read it so).
- A file without ``alpha``: scale 1.
- DoRA (``dora_scale``): W' = (W + d) * dora_scale / ||W + d||, the norm per input
  column ((1, in) magnitudes, LyCORIS's default) or per output row ((out, 1)); a
  strength s gives W + s * (W' - W). network/dora.py trains the same thing.
Everything is computed in fp32. ``add_to`` changes a weight in place a block of
output rows at a time, so a merge holds one fp32 weight and a slice of its change.
"""

from __future__ import annotations

import torch

from easytrain.lora_tools.files import LOHA, LOKR, LORA, Module


def _f(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32)


def _tucker(core: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LyCORIS's rebuild of a Tucker-decomposed conv factor: (out, in, k, k)."""
    return torch.einsum("i j k l, j r, i p -> p r k l", _f(core), _f(b).flatten(1), _f(a).flatten(1))


def _scale(module: Module, rank: int | None) -> float:
    alpha = module.alpha
    if alpha is None or not rank:
        return 1.0
    return alpha / rank


def lora_delta(module: Module, shape: torch.Size | tuple) -> torch.Tensor:
    t = module.tensors
    down, up = _f(t["lora_down.weight"]), _f(t["lora_up.weight"])
    if "lora_mid.weight" in t:
        mid = _f(t["lora_mid.weight"])
        # ComfyUI: the core sits between down and up; the result is (out, in, k, k)
        wd = torch.einsum("i j k l, j r -> i r k l", mid, down.flatten(1))
        delta = (up.flatten(1) @ wd.flatten(1)).reshape(up.shape[0], -1, *mid.shape[2:])
    else:
        delta = up.flatten(1) @ down.flatten(1)
    return (delta * _scale(module, down.shape[0])).reshape(shape)


def loha_delta(module: Module, shape) -> torch.Tensor:
    t = module.tensors
    if "hada_t1" in t:
        w1 = _tucker(t["hada_t1"], t["hada_w1_a"], t["hada_w1_b"])
        w2 = _tucker(t["hada_t2"], t["hada_w2_a"], t["hada_w2_b"])
    else:
        w1 = _f(t["hada_w1_a"]) @ _f(t["hada_w1_b"])
        w2 = _f(t["hada_w2_a"]) @ _f(t["hada_w2_b"])
    return (w1 * w2 * _scale(module, t["hada_w1_b"].shape[0])).reshape(shape)


def lokr_delta(module: Module, shape) -> torch.Tensor:
    t = module.tensors
    w1 = _f(t["lokr_w1"]) if "lokr_w1" in t else _f(t["lokr_w1_a"]) @ _f(t["lokr_w1_b"])
    if "lokr_w2" in t:
        w2 = _f(t["lokr_w2"])
    elif "lokr_t2" in t:
        w2 = _tucker(t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
    else:
        w2 = _f(t["lokr_w2_a"]) @ _f(t["lokr_w2_b"])
    rank = next((t[k].shape[0] for k in ("lokr_w1_b", "lokr_w2_b") if k in t), None)
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return (torch.kron(w1, w2) * _scale(module, rank)).reshape(shape)


DELTAS = {LORA: lora_delta, LOHA: loha_delta, LOKR: lokr_delta}


def delta(module: Module, shape) -> torch.Tensor:
    """The module's weight change in fp32 with the weight's ``shape`` (before DoRA)."""
    kind = module.kind
    if kind not in DELTAS:
        raise ValueError(f"{module.name}: not a LoRA, LoHa or LoKr module (keys {sorted(module.tensors)})")
    return DELTAS[kind](module, tuple(shape))


def _norm(weight: torch.Tensor, per_output: bool) -> torch.Tensor:
    if per_output:
        return weight.reshape(weight.shape[0], -1).norm(dim=1).reshape(weight.shape[0], *[1] * (weight.dim() - 1))
    columns = weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)
    return columns.reshape(1, weight.shape[1], *[1] * (weight.dim() - 2))


def apply(weight: torch.Tensor, module: Module, strength: float = 1.0) -> torch.Tensor:
    """The fp32 weight after applying ``module`` at ``strength`` (DoRA included)."""
    weight = _f(weight)
    change = delta(module, weight.shape)
    if not module.dora:
        return change.mul_(strength).add_(weight)
    magnitude = _f(module.tensors["dora_scale"])
    merged = weight + change
    per_output = magnitude.shape[0] == weight.shape[0] and magnitude.shape[0] != 1
    rebuilt = merged * (magnitude.reshape(_norm(merged, per_output).shape) / _norm(merged, per_output))
    return weight + strength * (rebuilt - weight)


CHUNK_ELEMENTS = 1 << 22  # rows of a change computed at once in add_to: about 16 MiB of fp32


def _row_delta(module: Module, start: int, end: int, shape: tuple) -> torch.Tensor | None:
    """Output rows start..end of the module's change, or None where only the whole change can be built."""
    t = module.tensors
    if module.kind == LORA and "lora_mid.weight" not in t:
        down = _f(t["lora_down.weight"])
        rows = _f(t["lora_up.weight"][start:end]).flatten(1) @ down.flatten(1)
        scale = _scale(module, down.shape[0])
    elif module.kind == LOHA and "hada_t1" not in t:
        rows = (_f(t["hada_w1_a"][start:end]) @ _f(t["hada_w1_b"])) * (_f(t["hada_w2_a"][start:end]) @ _f(t["hada_w2_b"]))
        scale = _scale(module, t["hada_w1_b"].shape[0])
    else:
        return None
    return rows.mul_(scale).reshape(end - start, *shape[1:])


@torch.no_grad()
def add_to(weight: torch.Tensor, module: Module, strength: float = 1.0) -> None:
    """Apply ``module`` at ``strength`` to the fp32 ``weight`` in place (a view, such as a q/k/v third, is fine)."""
    shape = tuple(weight.shape)
    if module.dora:
        weight.copy_(apply(weight, module, strength))
        return
    per_row = max(1, weight[0].numel())
    step = max(1, CHUNK_ELEMENTS // per_row)
    for start in range(0, shape[0], step):
        end = min(shape[0], start + step)
        rows = _row_delta(module, start, end, shape)
        if rows is None:
            weight.add_(delta(module, shape), alpha=strength)
            return
        weight[start:end].add_(rows, alpha=strength)
