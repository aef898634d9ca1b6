"""Extract a LoRA from a fine-tuned checkpoint and its base (kohya's extract_lora_from_models.py).

For every layer a LoRA targets by default (the transformer blocks' Linear/1x1
layers and the text encoders' attention and MLP; with a conv rank also the resnet
convs and samplers), the difference tuned - base is factored by SVD at a fixed or
rule-chosen rank (svd.py); alpha = rank, so the file's product is the difference
itself. As kohya's, a text encoder whose weights differ nowhere by more than
``min_diff`` was not trained and is left out. Both files are read tensor by tensor.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from easytrain import catalog
from easytrain.errors import UserError
from easytrain.lora_tools import svd
from easytrain.lora_tools.files import check_output, module_tensors, save_dtype_of, write_lora
from easytrain.lora_tools.layout import CONV_BLOCK, Layout, checkpoint_layout
from easytrain.lora_tools.names import split_name
from easytrain.lora_tools.stream import Reader

MAX_QUANTILE_SAMPLE = 1 << 24  # torch.quantile's input limit


@dataclass
class ExtractReport:
    output: Path
    modules: int
    mean_kept: float
    worst_kept: float
    worst_module: str
    skipped_parts: list[str] = field(default_factory=list)  # text encoders left out as unchanged


def _clamp(up: torch.Tensor, down: torch.Tensor, quantile: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    if quantile is None or quantile >= 1.0:
        return up, down
    values = torch.cat([up.flatten(), down.flatten()])
    if values.numel() > MAX_QUANTILE_SAMPLE:
        values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:MAX_QUANTILE_SAMPLE]]
    high = torch.quantile(values, quantile)
    return up.clamp(-high, high), down.clamp(-high, high)


def _check_pair(base: Layout, tuned: Layout) -> None:
    if base.arch and tuned.arch and not catalog.same_family(base.arch, tuned.arch):
        raise UserError(f"{tuned.path.name} is {tuned.description} but the base {base.path.name} is "
                        f"{base.description}; extract needs the model the fine-tune started from")
    theirs = {n: s.shape for n, s in tuned.slots.items()}
    ours = {n: s.shape for n, s in base.slots.items()}
    if theirs != ours:
        odd = sorted(set(theirs.items()) ^ set(ours.items()))
        raise UserError(f"{tuned.path.name} and {base.path.name} do not have the same layers "
                        f"(first difference: {odd[0][0]}); extract needs the model the fine-tune started from")


def extract_lora(base: str | Path, tuned: str | Path, output: str | Path, *, rank: int, conv_rank: int | None = None,
                 rule: str | None = None, param: float | None = None, min_diff: float = 0.01,
                 clamp_quantile: float | None = None, precision: str = "fp16",
                 on_progress: Callable[[int, int], None] | None = None) -> ExtractReport:
    if rank < 1 or (conv_rank is not None and conv_rank < 1):
        raise UserError("--rank and --conv-rank must be at least 1")
    output = check_output(output, [base, tuned])
    base_layout, tuned_layout = checkpoint_layout(base), checkpoint_layout(tuned)
    _check_pair(base_layout, tuned_layout)
    dtype = save_dtype_of(precision, torch.float16)
    slots = [s for s in base_layout.slots.values() if s.group != CONV_BLOCK or conv_rank is not None]
    result: dict[str, dict[str, torch.Tensor]] = {}
    kept: dict[str, float] = {}
    largest: dict[str, float] = {}
    with Reader(base_layout.path) as base_reader, Reader(tuned_layout.path) as tuned_reader:
        cache: dict[str, torch.Tensor] = {}
        for done, slot in enumerate(sorted(slots, key=lambda s: (s.key, s.third or 0)), 1):
            if slot.key not in cache:
                cache.clear()  # the thirds of one fused tensor come together
                cache[slot.key] = tuned_reader.read(slot.key).float() - base_reader.read(slot.key).float()
            diff = cache[slot.key]
            if slot.third is not None:
                rows = diff.shape[0] // 3
                diff = diff[slot.third * rows:(slot.third + 1) * rows]
            part = split_name(slot.name)[0]
            largest[part] = max(largest.get(part, 0.0), float(diff.abs().max()) if diff.numel() else 0.0)
            is_conv = diff.dim() == 4 and tuple(diff.shape[2:]) != (1, 1)
            factors = svd.factor(diff.flatten(1), conv_rank if is_conv and conv_rank else rank, rule, param)
            up, down = _clamp(factors.up, factors.down, clamp_quantile)
            extra = [1, 1] if diff.dim() == 4 else []
            result[slot.name] = {"lora_down.weight": down.reshape(factors.rank, *diff.shape[1:]).to(dtype).contiguous(),
                                 "lora_up.weight": up.reshape(diff.shape[0], factors.rank, *extra).to(dtype).contiguous(),
                                 "alpha": torch.tensor(float(factors.rank)).to(dtype)}
            kept[slot.name] = factors.kept
            if on_progress:
                on_progress(done, len(slots))
    skipped = sorted(p for p, value in largest.items() if p != "lora_unet" and value < min_diff)
    for name in [n for n in result if split_name(n)[0] in skipped]:
        del result[name], kept[name]
    if not result:
        raise UserError(f"{tuned_layout.path.name} does not differ from {base_layout.path.name} by more than "
                        f"{min_diff:g} anywhere; nothing to extract")
    metadata = _metadata(base_layout, tuned_layout, output, rank, conv_rank, rule, param)
    write_lora(output, module_tensors(result), metadata)
    worst = min(kept, key=kept.get)
    return ExtractReport(output, len(result), sum(kept.values()) / len(kept), kept[worst], worst, skipped)


def _metadata(base: Layout, tuned: Layout, output: Path, rank: int, conv_rank: int | None, rule, param
              ) -> dict[str, str]:
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank) if rule is None else "Dynamic",
        "ss_network_alpha": str(float(rank)) if rule is None else "Dynamic",
        "ss_output_name": output.stem,
        "ss_sd_model_name": base.path.name,
        "ss_training_comment": f"extracted from {tuned.path.name} - {base.path.name}"
                               + ("" if rule is None else f" with {rule} {param:g}"),
    }
    if conv_rank is not None:
        metadata["ss_network_args"] = json.dumps({"conv_dim": str(conv_rank), "conv_alpha": str(float(conv_rank))})
    if base.arch:
        from easytrain.network.metadata import modelspec

        entry = catalog.architecture(base.arch)
        metadata["ss_base_model_version"] = entry.base_model_version
        metadata["ss_v2"] = str(entry.v2)
        metadata.update(modelspec(arch=base.arch, title=output.stem, resolution=(entry.resolution,) * 2,
                                  prediction_type=entry.prediction_type, timestamp=time.time()))
    return metadata
