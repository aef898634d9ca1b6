"""Lower a LoRA's rank by SVD per module, keeping its strength (kohya's networks/resize_lora.py).

Per module: the product up @ down (convs flattened) is factored again at the new
rank, S folded into up as kohya does, and alpha set to scale * new rank so
up @ down * alpha / rank stays what it was (scale = the file's alpha / old rank,
1 without alpha). Convs larger than 1x1 take the conv rank. The metadata is kept,
with ss_network_dim / ss_network_alpha (and conv_dim / conv_alpha in
ss_network_args) updated and the resize noted in ss_training_comment, as kohya's.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from easytrain.errors import UserError
from easytrain.lora_tools import svd
from easytrain.lora_tools.files import LORA, LoraFile, check_output, module_tensors, read_lora, save_dtype_of, write_lora


@dataclass
class ModuleResult:
    name: str
    old_rank: int
    new_rank: int
    kept: float  # fraction of the module's Frobenius norm kept


@dataclass
class ResizeReport:
    output: Path
    modules: list[ModuleResult] = field(default_factory=list)

    @property
    def mean_kept(self) -> float:
        return statistics.fmean(m.kept for m in self.modules)

    @property
    def worst(self) -> ModuleResult:
        return min(self.modules, key=lambda m: m.kept)


def _fmt(value: float) -> str:
    return f"{value:g}"


def resize_module(tensors: dict[str, torch.Tensor], rank: int, rule: str | None, param: float | None,
                  dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], svd.Factors, int]:
    down, up = tensors["lora_down.weight"], tensors["lora_up.weight"]
    old_rank = down.shape[0]
    alpha = tensors.get("alpha")
    scale = 1.0 if alpha is None else float(alpha.float()) / old_rank
    product = up.float().flatten(1) @ down.float().flatten(1)
    factors = svd.factor(product, rank, rule, param)
    new_down = factors.down.reshape(factors.rank, *down.shape[1:])
    new_up = factors.up.reshape(up.shape[0], factors.rank, *up.shape[2:])
    alpha_dtype = alpha.dtype if alpha is not None else dtype
    out = {"lora_down.weight": new_down.to(dtype).contiguous(), "lora_up.weight": new_up.to(dtype).contiguous(),
           "alpha": torch.tensor(scale * factors.rank).to(alpha_dtype)}
    return out, factors, old_rank


def resize_lora(source: str | Path, output: str | Path, *, rank: int, conv_rank: int | None = None,
                rule: str | None = None, param: float | None = None, precision: str | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> ResizeReport:
    if rank < 1 or (conv_rank is not None and conv_rank < 1):
        raise UserError("--rank and --conv-rank must be at least 1")
    if rule is not None and (param is None or param <= 0):
        raise UserError(f"--{rule.replace('_', '-')} needs a value above 0")
    output = check_output(output, [source])
    lora = read_lora(source)
    _refuse_other_types(lora)
    dtype = save_dtype_of(precision, lora.dtype)
    conv_rank = conv_rank or rank
    report = ResizeReport(output)
    result: dict[str, dict[str, torch.Tensor]] = {}
    old_ranks = []
    for done, (name, module) in enumerate(sorted(lora.modules.items()), 1):
        wanted = rank if module.kernel_is_1x1 else conv_rank
        tensors, factors, old_rank = resize_module(module.tensors, wanted, rule, param, dtype)
        extra = {k: v for k, v in module.tensors.items() if k not in ("lora_down.weight", "lora_up.weight", "alpha")}
        result[name] = {**tensors, **extra}
        report.modules.append(ModuleResult(name, old_rank, factors.rank, factors.kept))
        old_ranks.append(old_rank)
        if on_progress:
            on_progress(done, len(lora.modules))
    write_lora(output, module_tensors(result), _metadata(lora, result, rank, conv_rank, rule, param, max(old_ranks)))
    return report


def _refuse_other_types(lora: LoraFile) -> None:
    if lora.kinds != {LORA}:
        raise UserError(f"{lora.path}: a {lora.network_type} file; resize works on LoRA and LoCon files "
                        "(up/down pairs), as kohya's resize_lora.py")
    if any(m.dora for m in lora.modules.values()):
        raise UserError(f"{lora.path}: a DoRA file; its magnitudes belong to the full-rank product, "
                        "so it is not resized (merge it into a checkpoint instead)")
    if any("lora_mid.weight" in m.tensors for m in lora.modules.values()):
        raise UserError(f"{lora.path}: a LoCon file in the Tucker (lora_mid) form, which resize does not read")


def _metadata(lora: LoraFile, result: dict, rank: int, conv_rank: int, rule: str | None, param: float | None,
              old_dim: int) -> dict[str, str]:
    metadata = dict(lora.metadata)
    comment = metadata.get("ss_training_comment", "")
    linear = [m for name, m in result.items() if lora.modules[name].kernel_is_1x1]
    convs = [m for name, m in result.items() if not lora.modules[name].kernel_is_1x1]
    if rule is None:
        conv_note = "" if conv_rank == rank or not convs else f" (conv: {conv_rank})"
        metadata["ss_training_comment"] = f"dimension is resized from {old_dim} to {rank}{conv_note}; {comment}"
        if linear:
            metadata["ss_network_dim"] = str(linear[0]["lora_down.weight"].shape[0])
            metadata["ss_network_alpha"] = _fmt(float(linear[0]["alpha"].float()))
    else:
        metadata["ss_training_comment"] = f"Dynamic resize with {rule}: {param:g} from {old_dim}; {comment}"
        metadata["ss_network_dim"] = "Dynamic"
        metadata["ss_network_alpha"] = "Dynamic"
    if convs and "ss_network_args" in metadata:
        try:
            args = json.loads(metadata["ss_network_args"])
        except json.JSONDecodeError:
            args = None
        if isinstance(args, dict) and "conv_dim" in args:
            if rule is None:
                args["conv_dim"] = str(convs[0]["lora_down.weight"].shape[0])
                args["conv_alpha"] = _fmt(float(convs[0]["alpha"].float()))
            else:
                args["conv_dim"] = args["conv_alpha"] = "Dynamic"
            metadata["ss_network_args"] = json.dumps(args)
    return metadata
