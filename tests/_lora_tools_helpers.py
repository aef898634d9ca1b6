"""Shared helpers for the LoRA file tools' tests: trained-looking tiny LoRAs on the tiny SD1 and SDXL models."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from tests._network_helpers import quiet, randomize_adapters, tiny_parts

SD1_SPECS = {
    "LoRA": dict(network_type="LoRA", dim=4, alpha=1.5),
    "LoCon": dict(network_type="LoCon", dim=4, alpha=1.5, conv_dim=3, conv_alpha=5.0),
    "LoHa": dict(network_type="LoHa", dim=4, alpha=3.0, conv_dim=2, conv_alpha=1.0),
    "LoKr": dict(network_type="LoKr", dim=4, alpha=3.0, conv_dim=2, conv_alpha=1.0),
    "DoRA": dict(network_type="LoCon", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0, dora=True),
}


def sd1_network(kind: str, seed: int = 123, scale: float = 0.2):
    """A tiny-SD1 network of ``kind`` with random adapters (its unet/text_encoder are adapted in place)."""
    from easytrain.families.sd.targets import apply_network
    from easytrain.network.spec import NetworkSpec

    parts = tiny_parts()
    network = apply_network(parts["unet"], parts["text_encoder"], NetworkSpec(**SD1_SPECS[kind]), seed=0)
    randomize_adapters(network, seed=seed, scale=scale)
    return network


def save_network(network, path: Path, arch: str = "sd1", dtype: str = "float", **metadata) -> Path:
    from easytrain.network.export import save_lora
    from easytrain.network.metadata import build_metadata

    save_lora(network, path, dtype=dtype,
              metadata=build_metadata(spec=network.spec, output_name=path.stem, arch=arch, **metadata))
    return path


def sd1_lora(folder: Path, kind: str = "LoRA", seed: int = 123, dtype: str = "float", **metadata):
    network = sd1_network(kind, seed)
    return network, save_network(network, folder / f"{kind.lower()}-{seed}.safetensors", dtype=dtype, **metadata)


def sdxl_base():
    from easytrain.families.load import load_base_model
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    quiet()
    return load_base_model(str(tiny_sdxl_paths().single_file), "sdxl")


def sdxl_lora(folder: Path, kind: str = "LoCon", seed: int = 5):
    """(base, network, path): a LoCon on the tiny SDXL model, both text encoders trained."""
    from easytrain.families.registry import family_for as adapter_for
    from easytrain.network.build import build_network
    from easytrain.network.spec import NetworkSpec

    base = sdxl_base()
    adapter = adapter_for(base.arch)
    spec = NetworkSpec(kind, dim=4, alpha=3.0, conv_dim=2, conv_alpha=1.0, train_text_encoder=True)
    models = adapter.network_models(base)
    network = build_network(models, adapter.network_targets(models, spec), spec, seed=0)
    randomize_adapters(network, seed=seed)
    path = save_network(network, folder / f"sdxl-{kind.lower()}.safetensors", arch="sdxl")
    return base, network, path


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})


def write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def modules(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name, _, suffix = key.partition(".")
        grouped.setdefault(name, {})[suffix] = tensor
    return grouped


def product(found: dict[str, torch.Tensor]) -> torch.Tensor:
    """up @ down * alpha / rank, flattened to 2-D: a module's change."""
    down, up = found["lora_down.weight"].float(), found["lora_up.weight"].float()
    alpha = float(found["alpha"].float()) if "alpha" in found else down.shape[0]
    return (up.flatten(1) @ down.flatten(1)) * (alpha / down.shape[0])
