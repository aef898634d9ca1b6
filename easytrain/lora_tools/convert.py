"""kohya format <-> the diffusers/peft format that diffusers' ``save_lora_weights`` writes.

diffusers form: ``unet.<module path>.lora_A.weight`` (= kohya's lora_down) and
``.lora_B.weight`` (= lora_up), ``text_encoder.`` / ``text_encoder_2.`` likewise,
UNet paths in the diffusers layout (SDXL's Stability-layout kohya names are
translated, names.py), and the alphas in the ``lora_adapter_metadata`` JSON that
diffusers turns into each part's LoraConfig (r, lora_alpha, rank_pattern,
alpha_pattern, target_modules). The tensors are never changed, and the kohya
metadata rides along, so kohya -> diffusers -> kohya gives back the same keys,
values and metadata. Reading also takes the older diffusers spellings
(``.lora.down.weight``, ``.lora_linear_layer.down.weight``) and ``.alpha`` keys.
LoHa, LoKr and DoRA have no place in that format and are refused.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from easytrain import catalog
from easytrain.errors import UserError
from easytrain.lora_tools import names
from easytrain.lora_tools.files import LORA, check_output, read_lora, write_lora
from easytrain.lora_tools.identify import arch_from_metadata, arch_from_width, stability_names

ADAPTER_METADATA = "lora_adapter_metadata"
ALPHA_DTYPE = "easytrain.kohya_alpha_dtype"
NO_ALPHA = "easytrain.kohya_no_alpha"
TEXT_PREFIXES = {"lora_te": "text_encoder", "lora_te1": "text_encoder", "lora_te2": "text_encoder_2"}
_DOWN_UP = ((".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight"),
            (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"))
_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


@dataclass
class ConvertReport:
    output: Path
    direction: str  # "kohya -> diffusers" or "diffusers -> kohya"
    modules: int


def _is_diffusers_file(path: Path) -> bool:
    from easytrain.model.detect import read_safetensors_header

    keys = read_safetensors_header(path).tensors
    return bool(keys) and all(k.startswith(("unet.", "text_encoder.", "text_encoder_2.")) for k in keys)


def convert(source: str | Path, output: str | Path) -> ConvertReport:
    """Either direction, chosen by what ``source`` holds."""
    source = Path(source).expanduser()
    output = check_output(output, [source])
    if source.is_file() and source.suffix.lower() == ".safetensors" and _is_diffusers_file(source):
        return diffusers_to_kohya(source, output)
    return kohya_to_diffusers(source, output)


# ---- kohya -> diffusers --------------------------------------------------------------------------


def _unet_path_from_kohya(path: str, stability: bool, config: dict | None) -> str:
    if not stability:
        return path
    translated = names.stability_to_diffusers(path, config)
    if translated is None:
        raise UserError(f"lora_unet_{path.replace('.', '_')}: not a UNet module of the Stability layout")
    return translated


def kohya_to_diffusers(source: Path, output: Path) -> ConvertReport:
    lora = read_lora(source)
    if lora.unknown_keys:
        raise UserError(f"{source}: has keys that are not LoRA modules ({lora.unknown_keys[0]}, ...); "
                        "convert would drop them")
    if lora.kinds != {LORA} or any(m.dora or "lora_mid.weight" in m.tensors for m in lora.modules.values()):
        raise UserError(f"{source}: a {lora.network_type} file; the diffusers/peft LoRA format holds plain "
                        "LoRA/LoCon up/down pairs only")
    stability = stability_names(lora)
    unet_paths = [names.split_name(n)[1] for n in lora.modules if n.startswith("lora_unet_")]
    config = names.unet_config_from_keys(unet_paths) if stability else None
    tensors: dict[str, torch.Tensor] = {}
    per_part: dict[str, dict[str, tuple[int, float | None]]] = {}
    no_alpha = []
    alpha_dtypes = set()
    for name, module in sorted(lora.modules.items()):
        prefix, path = names.split_name(name)
        if prefix == names.UNET:
            part, path = "unet", _unet_path_from_kohya(path, stability, config)
        else:
            part = TEXT_PREFIXES[prefix]
        tensors[f"{part}.{path}.lora_A.weight"] = module.tensors["lora_down.weight"]
        tensors[f"{part}.{path}.lora_B.weight"] = module.tensors["lora_up.weight"]
        if module.alpha is None:
            no_alpha.append(name)
        else:
            alpha_dtypes.add(module.tensors["alpha"].dtype)
        # LoraConfig patterns match module paths by suffix: without "text_model." they fit CLIPTextModel in
        # both transformers 4 (which has that level) and 5 (which dropped it)
        per_part.setdefault(part, {})[path.removeprefix("text_model.")] = (module.rank, module.alpha)
    metadata = {k: v for k, v in lora.metadata.items()}
    metadata["format"] = "pt"
    metadata[ADAPTER_METADATA] = json.dumps(_adapter_metadata(per_part), indent=2, sort_keys=True)
    if alpha_dtypes:
        metadata[ALPHA_DTYPE] = _DTYPE_NAMES.get(alpha_dtypes.pop(), "fp32")
    if no_alpha:
        metadata[NO_ALPHA] = json.dumps(no_alpha)
    from easytrain.fsutil import atomic_path
    from safetensors.torch import save_file

    with atomic_path(output) as tmp:
        save_file({k: t.contiguous() for k, t in tensors.items()}, str(tmp), metadata=metadata)
    return ConvertReport(output, "kohya -> diffusers", len(lora.modules))


def _adapter_metadata(per_part: dict[str, dict[str, tuple[int, float | None]]]) -> dict:
    out = {}
    for part, modules in per_part.items():
        ranks = {p: r for p, (r, _a) in modules.items()}
        alphas = {p: (float(r) if a is None else a) for p, (r, a) in modules.items()}
        r = Counter(ranks.values()).most_common(1)[0][0]
        alpha = Counter(alphas.values()).most_common(1)[0][0]
        config = {
            "r": r, "lora_alpha": alpha,
            "rank_pattern": {p: v for p, v in ranks.items() if v != r},
            "alpha_pattern": {p: v for p, v in alphas.items() if v != alpha},
            "target_modules": sorted(modules), "peft_type": "LORA", "bias": "none", "lora_dropout": 0.0,
            "use_dora": False, "lora_bias": False, "init_lora_weights": True, "fan_in_fan_out": False,
        }
        out.update({f"{part}.{k}": v for k, v in config.items()})
    return out


# ---- diffusers -> kohya --------------------------------------------------------------------------


def _read_raw(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})


def _pattern_value(patterns: dict, path: str):
    if path in patterns:
        return patterns[path]
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?({key})", path):
            return value
    return None


def _diffusers_unet_config(paths: list[str]) -> dict:
    """layers_per_block and block types seen in diffusers-layout UNet module paths."""
    found = [m.groups() for p in paths if (m := re.match(r"(down|up)_blocks\.(\d+)\.(attentions|resnets|"
                                                         r"downsamplers|upsamplers)\.(\d+)", p))]
    levels = max([int(level) + (2 if kind.endswith("samplers") else 1) for _s, level, kind, _j in found] + [1])
    per_block = max([int(j) + (1 if side == "down" else 0) for side, _l, kind, j in found
                     if kind in ("attentions", "resnets")] + [2])
    def types(side: str, cross: str, plain: str) -> list[str]:
        return [cross if any(s == side and int(l) == i and k == "attentions" for s, l, k, _j in found) else plain
                for i in range(levels)]
    return {"layers_per_block": per_block, "down_block_types": types("down", "CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": types("up", "CrossAttnUpBlock2D", "UpBlock2D")}


def diffusers_to_kohya(source: Path, output: Path) -> ConvertReport:
    tensors, metadata = _read_raw(source)
    adapter = json.loads(metadata.get(ADAPTER_METADATA, "{}") or "{}")
    modules: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in tensors.items():
        part, _, rest = key.partition(".")
        for down, up in _DOWN_UP:
            if rest.endswith(down):
                modules.setdefault((part, rest[:-len(down)]), {})["down"] = tensor
                break
            if rest.endswith(up):
                modules.setdefault((part, rest[:-len(up)]), {})["up"] = tensor
                break
        else:
            if rest.endswith(".alpha"):
                modules.setdefault((part, rest[:-len(".alpha")]), {})["alpha"] = tensor
            else:
                unknown.append(key)
    if unknown:
        raise UserError(f"{source}: keys this converter does not know ({unknown[0]}"
                        + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else "")
                        + "); DoRA magnitudes and LoRA biases have no kohya form")
    incomplete = [f"{p}.{m}" for (p, m), found in modules.items() if not {"down", "up"} <= set(found)]
    if incomplete:
        raise UserError(f"{source}: {incomplete[0]} has no lora_A/lora_B pair")

    parts = {p for p, _ in modules}
    arch = arch_from_metadata(metadata)
    if arch is None:
        to_k = next((f["down"] for (p, m), f in modules.items() if p == "unet" and m.endswith("attn2.to_k")), None)
        arch = arch_from_width(int(to_k.shape[1]) if to_k is not None else None)
    stability = "text_encoder_2" in parts or (arch is not None and
                                              catalog.architecture(arch).lora_layout == catalog.STABILITY_LAYOUT)
    config = _diffusers_unet_config([m for p, m in modules if p == "unet"]) if stability else None
    kohya_parts = {"unet": names.UNET, "text_encoder": "lora_te1" if stability else "lora_te",
                   "text_encoder_2": "lora_te2"}
    no_alpha = set(json.loads(metadata.get(NO_ALPHA, "[]")))
    alpha_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(metadata.get(ALPHA_DTYPE, ""), None)
    out: dict[str, torch.Tensor] = {}
    for (part, path), found in sorted(modules.items()):
        if part not in kohya_parts:
            raise UserError(f"{source}: a part named {part!r}; this converter knows unet, text_encoder, text_encoder_2")
        if part == "unet":
            kohya_path = names.diffusers_to_stability(path, config) if stability else path
            if kohya_path is None:
                raise UserError(f"{source}: unet.{path} is not a module kohya's SDXL names know")
        else:
            kohya_path = path if path.startswith("text_model.") else "text_model." + path
        name = names.path_to_name(kohya_parts[part], kohya_path)
        out[f"{name}.lora_down.weight"] = found["down"]
        out[f"{name}.lora_up.weight"] = found["up"]
        if name in no_alpha:
            continue
        alpha = _alpha(adapter, part, path, found)
        out[f"{name}.alpha"] = torch.tensor(alpha).to(alpha_dtype or found["down"].dtype)
    kept = {k: v for k, v in metadata.items() if k not in (ADAPTER_METADATA, ALPHA_DTYPE, NO_ALPHA, "format")}
    if not any(k.startswith("ss_") for k in kept):
        kept.update(_fresh_metadata(out, arch, source))
    write_lora(output, out, kept)
    return ConvertReport(output, "diffusers -> kohya", len(modules))


def _alpha(adapter: dict, part: str, path: str, found: dict) -> float:
    if "alpha" in found:
        return float(found["alpha"].float())
    rank = found["down"].shape[0]
    if f"{part}.lora_alpha" not in adapter:
        return float(rank)  # no alphas anywhere: diffusers applies scale 1
    value = _pattern_value(adapter.get(f"{part}.alpha_pattern") or {}, path.removeprefix("text_model."))
    return float(adapter[f"{part}.lora_alpha"] if value is None else value)


def _fresh_metadata(out: dict[str, torch.Tensor], arch: str | None, source: Path) -> dict[str, str]:
    ranks = Counter(t.shape[0] for k, t in out.items() if k.endswith("lora_down.weight"))
    alphas = Counter(float(t.float()) for k, t in out.items() if k.endswith(".alpha"))
    metadata = {"ss_network_module": "networks.lora", "ss_output_name": source.stem,
                "ss_training_comment": f"converted from the diffusers file {source.name}"}
    if ranks:
        metadata["ss_network_dim"] = str(ranks.most_common(1)[0][0])
    if alphas:
        metadata["ss_network_alpha"] = str(alphas.most_common(1)[0][0])
    if arch:
        entry = catalog.architecture(arch)
        metadata["ss_base_model_version"] = entry.base_model_version
        metadata["ss_v2"] = str(entry.v2)
        metadata["modelspec.architecture"] = f"{entry.modelspec}/lora"
        metadata["modelspec.implementation"] = entry.lora_layout
    return metadata

