"""The LoRA file tools on Flux.1 and Chroma files: info names them and counts their parts, resize and merge
(per-module SVD) keep kohya's names, and the tools that read SD/SDXL checkpoints refuse Flux with one line."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from easytrain.errors import UserError

DIM = 4


def flux_lora(path: Path, variant: str, *, seed: int = 0, train_t5: bool = False, metadata: bool = True) -> Path:
    """A tiny Flux-dev / Chroma LoRA as easytrain trains it, with random (non-zero) adapters."""
    from easytrain.families.flux.detect import CHROMA, FLUX_DEV
    from easytrain.families.flux.metadata import flux_metadata
    from easytrain.families.flux.options import defaults_for
    from easytrain.families.flux.targets import flux_targets
    from easytrain.families.flux.tiny import build_tiny_text_and_ae, build_tiny_transformer
    from easytrain.network.build import build_network
    from easytrain.network.export import save_lora
    from easytrain.network.spec import NetworkSpec

    chroma = variant == "chroma"
    model = build_tiny_transformer(CHROMA if chroma else FLUX_DEV)
    parts = build_tiny_text_and_ae()
    clip = None if chroma else parts["clip_l"]
    models = {"unet": model, "text_encoder": parts["t5"] if chroma else clip}
    if not chroma:
        models["text_encoder_2"] = parts["t5"]
    targets = flux_targets({"unet": model, "clip_l": clip, "t5": parts["t5"]}, variant, train_clip=True,
                           train_t5=train_t5 or chroma)
    network = build_network(models, targets, NetworkSpec("LoRA", DIM, 2.0), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in network.trainable_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    save_lora(network, path, dtype=torch.float32,
              metadata=flux_metadata(defaults_for(variant), variant) if metadata else {})
    if not metadata:  # a file from a trainer that writes none
        save_file(load_file(str(path)), str(path))
    return path


def info_lines(path: Path) -> str:
    from easytrain.lora_tools.inspect import inspect_lora, render

    return "\n".join(render(inspect_lora(path)))


def test_info_names_flux_dev_and_counts_its_parts(tmp_path):
    text = info_lines(flux_lora(tmp_path / "dev.safetensors", "dev", train_t5=True))
    assert "Flux.1 [dev] (metadata modelspec.architecture flux-1-dev/lora)" in text
    assert "network                LoRA, 52 modules" in text  # 20 + 6 transformer, 12 CLIP-L, 14 T5
    for part, count in (("double blocks", 20), ("single blocks", 6), ("CLIP-L", 12), ("T5-XXL", 14)):
        assert f"  {part:<23}{count} modules, dim {DIM}, alpha 2" in text, text


def test_info_names_chroma_and_its_t5_under_te1(tmp_path):
    text = info_lines(flux_lora(tmp_path / "chroma.safetensors", "chroma"))
    assert "Chroma (metadata modelspec.architecture chroma/lora)" in text
    for part, count in (("double blocks", 16), ("single blocks", 4), ("T5-XXL", 14)):
        assert f"  {part:<23}{count} modules" in text, text
    assert "CLIP-L" not in text


@pytest.mark.parametrize("variant,expected", [("dev", "Flux.1 [dev]"), ("chroma", "Chroma")])
def test_info_tells_flux_from_its_keys_without_metadata(tmp_path, variant, expected):
    from easytrain.lora_tools.files import read_lora
    from easytrain.lora_tools.identify import identify

    path = flux_lora(tmp_path / "bare.safetensors", variant, metadata=False)
    found = identify(read_lora(path))
    assert found.label == expected and found.evidence.startswith("keys: lora_unet_double_blocks_")


def test_schnell_is_told_by_modelspec(tmp_path):
    from easytrain.lora_tools.files import read_lora
    from easytrain.lora_tools.identify import identify

    path = flux_lora(tmp_path / "dev.safetensors", "dev")
    state = load_file(str(path))
    with safe_open(str(path), "pt") as fh:
        metadata = dict(fh.metadata())
    metadata["modelspec.architecture"] = "flux-1-schnell/lora"
    save_file(state, str(tmp_path / "schnell.safetensors"), metadata=metadata)
    assert identify(read_lora(tmp_path / "schnell.safetensors")).arch == "flux-schnell"


def _delta(state: dict, name: str) -> torch.Tensor:
    down, up = state[f"{name}.lora_down.weight"].double(), state[f"{name}.lora_up.weight"].double()
    return (up @ down) * (state[f"{name}.alpha"].item() / down.shape[0])


def _names(state: dict) -> set:
    return {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in state}


@pytest.mark.parametrize("variant", ["dev", "chroma"])
def test_resize_keeps_kohyas_names_and_the_change(tmp_path, variant):
    from easytrain.lora_tools.resize import resize_lora

    source = flux_lora(tmp_path / "in.safetensors", variant)
    resize_lora(source, tmp_path / "same.safetensors", rank=DIM)
    resize_lora(source, tmp_path / "half.safetensors", rank=2)
    original, same, half = (load_file(str(tmp_path / f)) for f in ("in.safetensors", "same.safetensors",
                                                                     "half.safetensors"))
    assert _names(same) == _names(half) == _names(original)
    for name in _names(original):
        torch.testing.assert_close(_delta(same, name), _delta(original, name), rtol=1e-4, atol=1e-6)
        assert half[f"{name}.lora_down.weight"].shape[0] == 2
    with safe_open(str(tmp_path / "half.safetensors"), "pt") as fh:
        assert fh.metadata()["ss_network_module"] == "networks.lora_flux"
    label = "Chroma" if variant == "chroma" else "Flux.1 [dev]"
    assert f"architecture           {label} " in info_lines(tmp_path / "half.safetensors")


def test_merging_two_flux_loras_adds_their_changes(tmp_path):
    from easytrain.lora_tools.merge import merge_loras

    first = flux_lora(tmp_path / "a.safetensors", "dev", seed=1)
    second = flux_lora(tmp_path / "b.safetensors", "dev", seed=2)
    merge_loras([(first, 1.0), (second, 0.5)], tmp_path / "ab.safetensors", rank=2 * DIM)
    a, b, ab = (load_file(str(tmp_path / f)) for f in ("a.safetensors", "b.safetensors", "ab.safetensors"))
    assert _names(ab) == _names(a)
    for name in _names(a):
        torch.testing.assert_close(_delta(ab, name), _delta(a, name) + 0.5 * _delta(b, name), rtol=1e-4, atol=1e-6)
    assert "Flux.1 [dev]" in info_lines(tmp_path / "ab.safetensors")


def test_merging_flux_with_an_sd_lora_is_refused(tmp_path):
    from easytrain.lora_tools.merge import merge_loras
    from tests._lora_tools_helpers import save_network, sd1_network

    flux = flux_lora(tmp_path / "flux.safetensors", "dev")
    sd = save_network(sd1_network("LoRA"), tmp_path / "sd.safetensors")
    with pytest.raises(UserError):
        merge_loras([(flux, 1.0), (sd, 1.0)], tmp_path / "mixed.safetensors", rank=DIM)


def _cli(*args: str) -> tuple[int, str]:
    from easytrain.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["lora", *args])
    return code, err.getvalue()


def test_checkpoint_tools_refuse_flux_with_one_line(tmp_path):
    from easytrain.families.flux.tiny import tiny_flux_paths

    checkpoint = tiny_flux_paths().dev
    lora = flux_lora(tmp_path / "dev.safetensors", "dev")
    for args, words in (
            (("merge", str(checkpoint), str(lora), "-o", str(tmp_path / "m.safetensors"), "--plain"),
             "merging into a checkpoint"),
            (("extract", str(checkpoint), str(checkpoint), "--rank", "2", "-o", str(tmp_path / "e.safetensors"),
              "--plain"), "extracting"),
            (("convert", str(lora), "-o", str(tmp_path / "c.safetensors")), "FluxPipeline.load_lora_weights")):
        code, err = _cli(*args)
        assert code == 2, err
        assert "(Flux.1 [dev])" in err and words in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("[mec].safetensors"))
