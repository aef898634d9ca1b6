"""Merge LoRAs: into one LoRA re-factored by SVD, or into a base checkpoint, streamed.

Into a checkpoint: the output has the base's keys, layout and metadata; each
tensor is read alone, the LoRAs' changes added in fp32 exactly as AUTOMATIC1111
and ComfyUI apply them (deltas.py; fused OpenCLIP q/k/v take their thirds), and
written at once in the precision asked for (the base's own by default).
Into one LoRA: per module the weighted sum of the inputs' changes is factored by
SVD at the rank asked for (kohya's svd_merge_lora.py; alpha = rank, so scale 1).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from easytrain import catalog
from easytrain.errors import UserError
from easytrain.lora_tools import deltas, svd
from easytrain.lora_tools.files import (LoraFile, Module, check_output, module_tensors, read_lora, save_dtype_of,
                                        write_lora)
from easytrain.lora_tools.identify import LoraArch, identify
from easytrain.lora_tools.layout import Layout, check_fits, checkpoint_layout
from easytrain.lora_tools.stream import FLOAT_NAMES, NAMES, Entry, Reader, tensor_bytes, write_streamed

Progress = Callable[[int, int], None]
# metadata a merged LoRA keeps from its first input: what says which base it is for
_BASE_KEYS = ("ss_base_model_version", "ss_v2", "ss_sd_model_name", "ss_sd_model_hash", "ss_new_sd_model_hash",
              "ss_resolution", "ss_clip_skip", "ss_v_parameterization")


def parse_weighted(spec: str) -> tuple[str, float]:
    """``file.safetensors:0.7`` -> (file, 0.7); a path without a number after its last ':' has weight 1."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, 1.0


@dataclass
class Input:
    lora: LoraFile
    weight: float
    arch: LoraArch

    @property
    def label(self) -> str:
        return self.lora.path.name


def read_inputs(specs: list[tuple[str | Path, float]]) -> list[Input]:
    inputs = []
    for path, weight in specs:
        lora = read_lora(path)
        inputs.append(Input(lora, weight, identify(lora)))
    return inputs


# ---- into a checkpoint ---------------------------------------------------------------------------


@dataclass
class CheckpointMergeReport:
    output: Path
    base: Layout
    modules: int                     # LoRA modules merged, all inputs together
    tensors_changed: int
    tensors: int
    inputs: list[Input] = field(default_factory=list)


def _fits(module: Module, shape: tuple) -> None:
    """RuntimeError when the module's change cannot take the layer's shape (built only where it is cheap to tell)."""
    t = module.tensors
    if module.kind == "LoRA" and "lora_mid.weight" not in t:
        rows, cols = t["lora_up.weight"].shape[0], t["lora_down.weight"].flatten(1).shape[1]
        if rows != shape[0] or cols != torch.Size(shape[1:]).numel():
            raise RuntimeError(f"its change is {rows} x {cols}")
    else:
        deltas.delta(module, shape)


def _check_shapes(layout: Layout, item: Input) -> None:
    for name, module in item.lora.modules.items():
        if module.kind is None:
            raise UserError(f"{item.label}: module {name} is of a kind this merge does not know "
                            f"(keys {', '.join(sorted(module.tensors))})")
        shape = layout.slots[name].shape
        try:
            _fits(module, shape)
        except RuntimeError as exc:
            raise UserError(f"{item.label}: {name} does not fit the base's layer of shape {list(shape)} ({exc}); "
                            "the LoRA was made for another model") from None


def merge_into_checkpoint(base: str | Path, specs: list[tuple[str | Path, float]], output: str | Path, *,
                          precision: str | None = None, on_progress: Progress | None = None
                          ) -> CheckpointMergeReport:
    output = check_output(output, [base] + [p for p, _ in specs])
    layout = checkpoint_layout(base)
    inputs = read_inputs(specs)
    patches: dict[str, list[tuple[int | None, Module, float]]] = {}
    for item in inputs:
        check_fits(layout, item.lora.modules, item.label, item.arch.arch)
        _check_shapes(layout, item)
        for name, module in item.lora.modules.items():
            slot = layout.slots[name]
            patches.setdefault(slot.key, []).append((slot.third, module, item.weight))
    out_name = NAMES[save_dtype_of(precision, torch.float32)] if precision else None

    reader = Reader(layout.path)
    try:
        keys = sorted(reader.keys(), key=lambda k: reader.tensors[k]["data_offsets"][0])
        entries = [_entry(reader, key, patches.get(key), out_name) for key in keys]
        metadata = dict(reader.metadata)
        metadata["easytrain.merged_loras"] = json.dumps(
            [{"file": i.label, "weight": i.weight, "sshs_model_hash": i.lora.metadata.get("sshs_model_hash", "")}
             for i in inputs])
        write_streamed(output, entries, metadata, on_progress)
    finally:
        reader.close()
    return CheckpointMergeReport(output, layout, sum(len(i.lora.modules) for i in inputs), len(patches), len(keys),
                                 inputs)


def _entry(reader: Reader, key: str, patches, out_name: str | None) -> Entry:
    source = reader.dtype_name(key)
    target = out_name if out_name and source in FLOAT_NAMES else source
    if not patches and target == source:
        return Entry(key, source, reader.shape(key), lambda out: reader.copy_to(key, out))

    def write(out) -> None:
        tensor = reader.read_float32(key) if patches else reader.read(key)
        if patches:
            for third, module, weight in patches:
                rows = tensor.shape[0] // 3
                view = tensor if third is None else tensor[third * rows:(third + 1) * rows]
                deltas.add_to(view, module, weight)
        dtype = _torch_dtype(target)
        step = max(1, deltas.CHUNK_ELEMENTS // max(1, tensor[0].numel())) if tensor.dim() else 1
        if tensor.dim() == 0:
            out.write(tensor_bytes(tensor.to(dtype)))
        for start in range(0, tensor.shape[0] if tensor.dim() else 0, step):  # no whole second copy
            out.write(tensor_bytes(tensor[start:start + step].to(dtype)))

    return Entry(key, target, reader.shape(key), write)


def _torch_dtype(name: str) -> torch.dtype:
    from easytrain.lora_tools.stream import DTYPES

    return DTYPES[name]


# ---- LoRAs into one LoRA -------------------------------------------------------------------------

_CONV_3X3_NAME = re.compile(r"(conv1|conv2|in_layers_2|out_layers_3|_op|samplers_0_conv|_\d_conv)$")


@dataclass
class LoraMergeReport:
    output: Path
    modules: int
    mean_kept: float
    worst_kept: float
    worst_module: str
    inputs: list[Input] = field(default_factory=list)


def _input_shape(modules: list[Module], flat_in: int) -> tuple:
    """The weight's shape past its output dim: (in,) or (in, k, k), from whichever input shows it."""
    for module in modules:
        t = module.tensors
        if "lora_down.weight" in t:
            return tuple(t["lora_down.weight"].shape[1:])
        if "hada_t1" in t:
            return (t["hada_w1_b"].shape[1], *t["hada_t1"].shape[2:])
        if "lokr_w2" in t and t["lokr_w2"].dim() == 4:
            w1_in = t["lokr_w1"].shape[1] if "lokr_w1" in t else t["lokr_w1_b"].shape[1]
            return (w1_in * t["lokr_w2"].shape[1], *t["lokr_w2"].shape[2:])
    if _CONV_3X3_NAME.search(modules[0].name) and flat_in % 9 == 0:
        return (flat_in // 9, 3, 3)
    return (flat_in,)


def _flat_delta(module: Module) -> torch.Tensor:
    t = module.tensors
    if "lora_down.weight" in t:
        rows = t["lora_up.weight"].shape[0]
        cols = t["lora_down.weight"].flatten(1).shape[1] if "lora_mid.weight" not in t else None
        if cols is not None:
            return deltas.delta(module, (rows, cols))
    if module.kind == "LoHa" and "hada_t1" not in t:
        return deltas.delta(module, (t["hada_w1_a"].shape[0], t["hada_w1_b"].shape[1]))
    if module.kind == "LoKr" and "lokr_t2" not in t:
        w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
        w2_rows = t["lokr_w2"].shape[0] if "lokr_w2" in t else t["lokr_w2_a"].shape[0]
        w2_cols = t["lokr_w2"].flatten(1).shape[1] if "lokr_w2" in t else t["lokr_w2_b"].shape[1]
        return deltas.delta(module, (w1.shape[0] * w2_rows, w1.shape[1] * w2_cols))
    shape = _tucker_shape(module)
    return deltas.delta(module, shape).flatten(1)


def _tucker_shape(module: Module) -> tuple:
    t = module.tensors
    if "lora_mid.weight" in t:
        return (t["lora_up.weight"].shape[0], t["lora_down.weight"].shape[1], *t["lora_mid.weight"].shape[2:])
    if "hada_t1" in t:
        return (t["hada_w1_a"].shape[1], t["hada_w1_b"].shape[1], *t["hada_t1"].shape[2:])
    w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
    return (w1.shape[0] * t["lokr_w2_a"].shape[1], w1.shape[1] * t["lokr_w2_b"].shape[1], *t["lokr_t2"].shape[2:])


def merge_loras(specs: list[tuple[str | Path, float]], output: str | Path, *, rank: int,
                conv_rank: int | None = None, rule: str | None = None, param: float | None = None,
                precision: str | None = None, on_progress: Progress | None = None) -> LoraMergeReport:
    if rank < 1:
        raise UserError("--rank must be at least 1")
    output = check_output(output, [p for p, _ in specs])
    inputs = read_inputs(specs)
    _check_same_architecture(inputs)
    for item in inputs:
        if any(m.dora for m in item.lora.modules.values()):
            raise UserError(f"{item.label}: a DoRA file changes the base weights' norms; it can be merged into a "
                            "checkpoint but not into another LoRA")
    by_name: dict[str, list[tuple[Module, float]]] = {}
    for item in inputs:
        for name, module in item.lora.modules.items():
            by_name.setdefault(name, []).append((module, item.weight))
    dtype = save_dtype_of(precision, inputs[0].lora.dtype)
    result: dict[str, dict[str, torch.Tensor]] = {}
    kept: dict[str, float] = {}
    for done, (name, found) in enumerate(sorted(by_name.items()), 1):
        total = None
        for module, weight in found:
            change = _flat_delta(module) * weight
            if total is not None and change.shape != total.shape:
                raise UserError(f"{name}: the inputs disagree on this layer's shape "
                                f"({list(total.shape)} and {list(change.shape)}); they are for different models")
            total = change if total is None else total + change
        in_shape = _input_shape([m for m, _ in found], total.shape[1])
        wanted = conv_rank if conv_rank and len(in_shape) == 3 and in_shape[1:] != (1, 1) else rank
        factors = svd.factor(total, wanted, rule, param)
        up = factors.up.reshape(total.shape[0], factors.rank, *([1, 1] if len(in_shape) == 3 else []))
        result[name] = {"lora_down.weight": factors.down.reshape(factors.rank, *in_shape).to(dtype).contiguous(),
                        "lora_up.weight": up.to(dtype).contiguous(),
                        "alpha": torch.tensor(float(factors.rank)).to(dtype)}
        kept[name] = factors.kept
        if on_progress:
            on_progress(done, len(by_name))
    write_lora(output, module_tensors(result), _merged_metadata(inputs, output, rank, conv_rank, rule, param, result))
    worst = min(kept, key=kept.get)
    return LoraMergeReport(output, len(result), sum(kept.values()) / len(kept), kept[worst], worst, inputs)


def _check_same_architecture(inputs: list[Input]) -> None:
    known = [i for i in inputs if i.arch.arch]
    for item in known[1:]:
        if not catalog.same_family(item.arch.arch, known[0].arch.arch):
            raise UserError(f"{item.label} is a LoRA for {item.arch.label} and {known[0].label} one for "
                            f"{known[0].arch.label}; only LoRAs of one architecture merge")


def _merged_metadata(inputs: list[Input], output: Path, rank: int, conv_rank: int | None, rule, param,
                     result: dict) -> dict[str, str]:
    first = inputs[0].lora.metadata
    metadata = {k: v for k, v in first.items() if k in _BASE_KEYS or k.startswith("modelspec.")}
    metadata["modelspec.title"] = output.stem
    metadata["ss_output_name"] = output.stem
    metadata["ss_network_module"] = "networks.lora"
    metadata["ss_network_dim"] = str(rank) if rule is None else "Dynamic"
    metadata["ss_network_alpha"] = str(float(rank)) if rule is None else "Dynamic"
    has_convs = any(t["lora_down.weight"].dim() == 4 and tuple(t["lora_down.weight"].shape[2:]) != (1, 1)
                    for t in result.values())
    if has_convs:
        conv = conv_rank or rank
        metadata["ss_network_args"] = json.dumps({"conv_dim": str(conv), "conv_alpha": str(float(conv))})
    how = f"rank {rank}" if rule is None else f"{rule} {param:g} (at most rank {rank})"
    sources = ", ".join(f"{i.label} x {i.weight:g}" for i in inputs)
    metadata["ss_training_comment"] = f"merged from {sources} by SVD, {how}"
    metadata["easytrain.merged_loras"] = json.dumps(
        [{"file": i.label, "weight": i.weight, "sshs_model_hash": i.lora.metadata.get("sshs_model_hash", "")}
         for i in inputs])
    return metadata
