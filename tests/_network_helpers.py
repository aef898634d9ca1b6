"""Shared helpers for the network tests: tiny and full-size (meta) models, merges, inputs."""

from __future__ import annotations

import torch

# SD1.5's UNet and CLIP ViT-L/14 text encoder, as their configs say (numbers only, nothing downloaded).
SD15_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    use_linear_projection=False,
)

CLIP_L_CONFIG = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    projection_dim=768,
    hidden_act="quick_gelu",
)


def quiet() -> None:
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


def full_sd15_on_meta():
    """(unet, text_encoder) with SD1.5's full shapes on the meta device: no memory, no download."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    quiet()
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L_CONFIG))
    return unet, text_encoder


def tiny_parts(seed: int = 0) -> dict:
    from easytrain.families.sd.tiny import build_tiny_components

    quiet()
    return build_tiny_components(seed)


def randomize_adapters(network, seed: int = 123, scale: float = 0.2) -> None:
    """Give every adapter weight a random non-zero value (a freshly built LoRA has up = 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def unet_inputs(seed: int = 7):
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, 32, 32, generator=gen)
    timesteps = torch.tensor([10, 500])
    context = torch.randn(2, 9, 32, generator=gen)
    return sample, timesteps, context


def token_ids(seed: int = 7, vocab: int = 500):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (2, 9), generator=gen)


@torch.no_grad()
def run_unet(unet, inputs) -> torch.Tensor:
    sample, timesteps, context = inputs
    return unet(sample, timesteps, context).sample


@torch.no_grad()
def run_text_encoder(text_encoder, ids) -> torch.Tensor:
    return text_encoder(ids).last_hidden_state


def kohya_module_map(unet, text_encoder) -> dict:
    """kohya name -> module for every Linear/Conv2d of both models (an independent reimplementation)."""
    found = {}
    for prefix, model, extra in (("lora_unet", unet, ""), ("lora_te", text_encoder, "text_model.")):
        for path, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                found[f"{prefix}_{extra}{path}".replace(".", "_")] = module
    return found


@torch.no_grad()
def merge_lora_by_hand(unet, text_encoder, state_dict: dict) -> int:
    """W += up @ down * alpha / dim for every module in a kohya LoRA state dict; returns modules merged."""
    modules = kohya_module_map(unet, text_encoder)
    names = {key.split(".")[0] for key in state_dict}
    for name in names:
        down = state_dict[f"{name}.lora_down.weight"].float()
        up = state_dict[f"{name}.lora_up.weight"].float()
        alpha = state_dict[f"{name}.alpha"].float().item()
        rank = down.shape[0]
        weight = modules[name].weight
        delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
        weight += delta * (alpha / rank)
    return len(names)
