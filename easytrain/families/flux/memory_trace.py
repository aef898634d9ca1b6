"""Trace one LoRA step of full-size Flux.1 on the meta device: the numbers behind families/flux/memory.py.

    python -m easytrain.families.flux.memory_trace

The method is bench/memory_trace.py's (its ``MetaAutocast`` and ``LiveBytes`` modes are used as they
are): the 12B transformer built on the meta device in bf16, kohya's 304-module LoRA attached by
easytrain's network code, CUDA autocast's casts reproduced, attention through the flash kernel's op,
and the high-water mark of the storages created during one forward and backward (less the LoRA
gradients still alive at the end) is the activation peak. Traced at 512 and 1024 px with 512 T5
tokens (dev), with and without gradient checkpointing, with the base weights in bf16 and stored in fp8.
The parameter counts of the transformer, its blocks, CLIP-L, T5-XXL and the AE come from the same
meta models. tests/test_flux_memory.py re-runs one trace and fails when the table drifts.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from functools import partial
from pathlib import Path
from pprint import pformat

import torch
import torch.nn.functional as F

TRACED_SIDES = (512, 1024)
T5_TOKENS = 512
TRACED_DIM = 1


def _bench():
    """bench/memory_trace.py, loaded from the repository (it is a script, not a package module)."""
    name = "easytrain_bench_memory_trace"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[3] / "bench" / "memory_trace.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def meta_transformer(kind: str = "flux-dev"):
    from easytrain.families.flux.model import FluxConfig, build_model

    chroma = kind == "chroma"
    config = FluxConfig(kind=kind, vec_in_dim=0 if chroma else 768, guidance_embed=kind == "flux-dev")
    return build_model(config, "meta")


def meta_text_encoders_and_ae() -> dict:
    """CLIP-L, T5-XXL (encoder) and the AE on the meta device, from the shipped configs."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from easytrain.families.flux.load import CONFIG_DIR

    def config(name):
        values = json.loads((CONFIG_DIR / name).read_text(encoding="utf-8"))
        values.pop("model_type", None)
        return values

    with torch.device("meta"):
        return dict(clip_l=CLIPTextModel(CLIPTextConfig(**config("clip_l.json"))),
                    t5=T5EncoderModel(T5Config(**config("t5xxl.json"))),
                    ae=AutoencoderKL.from_config(config("ae.json")))


def _network(model, variant: str, clip=None, t5=None):
    from easytrain.families.flux.targets import flux_targets, t5_part
    from easytrain.network.build import build_network
    from easytrain.network.spec import NetworkSpec

    models = {"unet": model}
    if clip is not None:
        models["text_encoder"] = clip
    if t5 is not None:
        models[t5_part(variant)] = t5
    spec = NetworkSpec("LoRA", TRACED_DIM, 1.0, train_text_encoder=clip is not None or t5 is not None)
    targets = flux_targets({"unet": model, "clip_l": clip, "t5": t5}, variant, train_clip=clip is not None,
                           train_t5=t5 is not None)
    return build_network(models, targets, spec, seed=0)


def counts(kind: str = "flux-dev") -> dict:
    """Parameter counts: the whole of each part, one block of each kind, the blocks' Linear weights."""
    variant = "chroma" if kind == "chroma" else "dev"
    model = meta_transformer(kind)
    others = meta_text_encoders_and_ae()
    params = {"transformer": sum(p.numel() for p in model.parameters())}
    params.update({part: sum(p.numel() for p in m.parameters()) for part, m in others.items()})
    block = {"double": sum(p.numel() for p in model.double_blocks[0].parameters()),
             "single": sum(p.numel() for p in model.single_blocks[0].parameters())}
    linear_weights = {kind: sum(m.weight.numel() for m in blocks[0].modules() if isinstance(m, torch.nn.Linear))
                      for kind, blocks in (("double", model.double_blocks), ("single", model.single_blocks))}
    network = _network(model, variant)
    lora = {"unet": sum(p.numel() for p in network.parameters_of("unet"))}
    if variant == "chroma":  # T5 only, as the first text encoder
        text_network = _network(meta_transformer(kind), variant, t5=others["t5"])
        lora["t5"] = sum(p.numel() for p in text_network.parameters_of("text_encoder"))
        params.pop("clip_l")
    else:
        text_network = _network(meta_transformer(kind), variant, clip=others["clip_l"], t5=others["t5"])
        lora["clip_l"] = sum(p.numel() for p in text_network.parameters_of("text_encoder"))
        lora["t5"] = sum(p.numel() for p in text_network.parameters_of("text_encoder_2"))
    return dict(parameters=params, block_parameters=block, block_linear_weights=linear_weights,
                blocks={"double": len(model.double_blocks), "single": len(model.single_blocks)},
                lora_per_dim=lora)


def activation_bytes(side: int, *, fp8: bool, checkpointing: bool, batch: int = 1, kind: str = "flux-dev") -> int:
    """Peak bytes one LoRA step holds beyond the weights, the inputs and the LoRA gradients."""
    bench = _bench()
    dtype = torch.bfloat16
    model = meta_transformer(kind)
    network = _network(model, "chroma" if kind == "chroma" else "dev")
    network.cast_base(dtype)
    if fp8:
        from easytrain.families.flux.fp8 import store_in_fp8

        store_in_fp8(model, compute_dtype=dtype)
    model.train()
    if checkpointing:
        model.gradient_checkpointing = True
        model._run = partial(_checkpointed, bench, dtype)
    meta = torch.device("meta")
    tokens = (side // 16) ** 2
    inputs = dict(img=torch.empty(batch, tokens, 64, device=meta, dtype=dtype),
                  img_ids=torch.zeros(batch, tokens, 3, device=meta),
                  txt=torch.empty(batch, T5_TOKENS, model.config.context_in_dim, device=meta, dtype=dtype),
                  txt_ids=torch.zeros(batch, T5_TOKENS, 3, device=meta),
                  timesteps=torch.zeros(batch, device=meta))
    if kind != "chroma":
        inputs["y"] = torch.empty(batch, 768, device=meta, dtype=dtype)
    if kind == "flux-dev":
        inputs["guidance"] = torch.ones(batch, device=meta)
    target = torch.empty(batch, tokens, 64, device=meta)
    with bench.MetaAutocast(dtype), bench.LiveBytes(model, *inputs.values()) as live:
        pred = model(**inputs)
        loss = F.mse_loss(pred.float(), target)
        del pred
        loss.backward()
        del loss
    return live.peak - live.live


def _checkpointed(bench, dtype, block, *args):
    return bench.checkpoint_under_autocast(dtype, block, *args)


def trace(kind: str = "flux-dev") -> dict:
    found = counts(kind)
    found["traced_sides"] = TRACED_SIDES
    found["activation_bytes"] = {(side, "fp8" if fp8 else "bf16", ckpt): activation_bytes(side, fp8=fp8,
                                                                                         checkpointing=ckpt, kind=kind)
                                 for side in TRACED_SIDES for fp8 in (False, True) for ckpt in (True, False)}
    return found


def table(found: dict, name: str = "FLUX_MEMORY") -> str:
    """``found`` as the Python source of memory.py's FLUX_MEMORY (or CHROMA_MEMORY)."""
    lines = [f"{name} = FluxMemory(  # traced by easytrain/families/flux/memory_trace.py, batch 1, 512 T5 tokens"]
    for key in ("traced_sides", "parameters", "block_parameters", "block_linear_weights", "blocks", "lora_per_dim",
                "activation_bytes"):
        start = f"    {key}="
        text = pformat(found[key], width=110 - len(start)).replace("\n", "\n" + " " * len(start))
        lines.append(f"{start}{text},")
    return "\n".join(lines + [")"])


if __name__ == "__main__":
    import warnings

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        print(table(trace("flux-dev")))
        print(table(trace("chroma"), "CHROMA_MEMORY"))
