"""Helpers for the model tests: small fake checkpoints with real key layouts, file rewriting."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

# A few keys of each layout; widths are what the detector reads (dim 1 of the token embedding).
_UNET_KEYS = {
    "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
    "model.diffusion_model.out.2.bias": (4,),
    "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3),
}


CLIP_VOCAB = 49408  # an SD1 text encoder's vocabulary: check refuses any other


def fake_checkpoint_tensors(arch: str) -> dict[str, torch.Tensor]:
    shapes = dict(_UNET_KEYS)
    if arch == "sd1":
        shapes["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = (CLIP_VOCAB, 768)
        shapes["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = (768,)
    elif arch == "sd2":
        shapes["cond_stage_model.model.token_embedding.weight"] = (4, 1024)
        shapes["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] = (3 * 1024, 4)
    elif arch == "sdxl":
        shapes["model.diffusion_model.label_emb.0.0.weight"] = (4, 2816)
        shapes["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"] = (4, 768)
        shapes["conditioner.embedders.1.model.token_embedding.weight"] = (4, 1280)
    else:
        raise ValueError(arch)
    # int8: only the shapes matter, and CLIP's 49408-token table stays small (38 MB)
    return {key: torch.zeros(shape, dtype=torch.int8 if shape[0] == CLIP_VOCAB else torch.float32)
            for key, shape in shapes.items()}


def write_fake_checkpoint(path: Path, arch: str, metadata: dict[str, str] | None = None) -> Path:
    save_file(fake_checkpoint_tensors(arch), str(path), metadata=metadata)
    return path


def rewrite_keys(source: Path, target: Path, rename) -> Path:
    """Copy a single-file checkpoint (metadata kept) with every key passed through ``rename`` (None drops it)."""
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
    state = load_file(str(source))
    out = {}
    for key, tensor in state.items():
        new = rename(key)
        if new is not None:
            out[new] = tensor
    save_file(out, str(target), metadata=metadata)
    return target


def state_dicts_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class RunsCode:
    """Pickled, it runs code that writes ``marker``: what a malicious .ckpt carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))
