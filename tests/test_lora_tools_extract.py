"""`easytrain lora extract`: SVD of (fine-tuned - base) per targeted layer gives the LoRA's changes back."""

from __future__ import annotations

import pytest
import torch

from tests._lora_tools_helpers import modules, product, read, sd1_lora, sdxl_lora, write


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def test_extract_from_base_plus_merged_locon_gives_each_delta_back(tmp_path):
    from easytrain.lora_tools.extract import extract_lora
    from easytrain.lora_tools.merge import merge_into_checkpoint
    from easytrain.families.sd.tiny import tiny_model_paths

    base = tiny_model_paths().single_file
    _network, lora = sd1_lora(tmp_path, "LoCon")
    tuned = tmp_path / "tuned.safetensors"
    merge_into_checkpoint(base, [(lora, 1.0)], tuned)
    out = tmp_path / "extracted.safetensors"
    report = extract_lora(base, tuned, out, rank=4, conv_rank=3, min_diff=0, precision="float")
    original, (tensors, metadata) = modules(read(lora)[0]), read(out)
    extracted = modules(tensors)
    assert set(original) <= set(extracted)
    for name, found in original.items():
        assert _relative(product(extracted[name]), product(found)) < 1e-4, name
        assert extracted[name]["lora_down.weight"].shape == found["lora_down.weight"].shape
        assert float(extracted[name]["alpha"]) == found["lora_down.weight"].shape[0]  # alpha = rank, kohya's
    # modules the LoRA does not touch (none here beyond its own) would come out as zero changes
    assert report.worst_kept > 0.9999
    assert metadata["ss_network_module"] == "networks.lora" and metadata["ss_base_model_version"] == "sd_v1"
    assert metadata["ss_network_dim"] == "4" and '"conv_dim": "3"' in metadata["ss_network_args"]
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"


def test_extract_on_sdxl_reads_the_fused_text_encoder_thirds(tmp_path):
    from easytrain.lora_tools.extract import extract_lora
    from easytrain.lora_tools.merge import merge_into_checkpoint
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    base = tiny_sdxl_paths().single_file
    _b, _n, lora = sdxl_lora(tmp_path)
    tensors = {k: v for k, v in read(lora)[0].items() if not k.startswith("lora_unet_")}  # text encoders only
    text_only = write(tmp_path / "te.safetensors", tensors, read(lora)[1])
    tuned = tmp_path / "tuned.safetensors"
    merge_into_checkpoint(base, [(text_only, 1.0)], tuned)
    out = tmp_path / "x.safetensors"
    report = extract_lora(base, tuned, out, rank=4, precision="float", min_diff=0)
    extracted, original = modules(read(out)[0]), modules(tensors)
    for name in ("lora_te2_text_model_encoder_layers_0_self_attn_k_proj", "lora_te1_text_model_encoder_layers_1_mlp_fc2"):
        assert _relative(product(extracted[name]), product(original[name])) < 1e-4
    assert report.skipped_parts == []


def test_an_untrained_text_encoder_is_left_out_as_kohya_does(tmp_path, capsys):
    from easytrain.cli import main
    from easytrain.lora_tools.merge import merge_into_checkpoint
    from easytrain.families.sd.tiny import tiny_model_paths

    base = tiny_model_paths().single_file
    _network, lora = sd1_lora(tmp_path, "LoRA")
    tensors, metadata = read(lora)
    unet_only = write(tmp_path / "unet.safetensors", {k: v for k, v in tensors.items() if k.startswith("lora_unet_")},
                      metadata)
    tuned = tmp_path / "tuned.safetensors"
    merge_into_checkpoint(base, [(unet_only, 1.0)], tuned)
    out = tmp_path / "x.safetensors"
    assert main(["lora", "extract", str(base), str(tuned), "--rank", "4", "-o", str(out), "--plain"]) == 0
    printed = capsys.readouterr().out
    assert "lora_te: no weight differs by more than 0.01; left out (not trained)" in printed
    names = set(modules(read(out)[0]))
    assert names and all(n.startswith("lora_unet_") for n in names)
    assert read(out)[0][next(iter(read(out)[0]))].dtype == torch.float16  # fp16 by default


def test_extract_refuses_checkpoints_of_two_architectures(tmp_path):
    from easytrain.errors import UserError
    from easytrain.lora_tools.extract import extract_lora
    from easytrain.families.sd.tiny import tiny_model_paths
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    with pytest.raises(UserError, match="extract needs the model the fine-tune started from"):
        extract_lora(tiny_model_paths().single_file, tiny_sdxl_paths().single_file, tmp_path / "x.safetensors", rank=4)
    assert not (tmp_path / "x.safetensors").exists()
