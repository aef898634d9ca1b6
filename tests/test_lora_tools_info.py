"""`easytrain lora info`, the checkpoint layout the tools share, and the CLI's lightness and one-line errors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests._lora_tools_helpers import read, sd1_lora, write

REPO = Path(__file__).resolve().parents[1]


def _info(path) -> str:
    from easytrain.lora_tools.inspect import inspect_lora, render

    return "\n".join(render(inspect_lora(path)))


def test_info_on_our_file_shows_settings_tags_triggers_and_hashes(tmp_path):
    tags = {"5_zzz": {"zzz": 20, "1girl": 18, "smile": 7, "red hair": 19}, "2_style": {"zzz": 10, "outdoors": 3}}
    dirs = {"5_zzz": {"n_repeats": 5, "img_count": 20}, "2_style": {"n_repeats": 2, "img_count": 10}}
    _network, path = sd1_lora(tmp_path, "LoCon", tag_frequency=tags, dataset_dirs=dirs, optimizer="AdamW8bit",
                              learning_rate=5e-4, steps=600, num_epochs=10, epoch=10)
    text = _info(path)
    assert "architecture           SD1.x (metadata ss_base_model_version sd_v1)" in text
    assert "network                LoCon, " in text
    assert "UNet                   " in text and "dim 4 (" in text and "3 (" in text  # dims differ per kind of layer
    assert "optimizer              AdamW8bit" in text and "steps                  600" in text
    assert "5_zzz: 20 images x 5 repeats" in text
    assert "top tags                 zzz (30), red hair (19), 1girl (18)" in text
    assert "trigger words            zzz" in text and "red hair" in text.split("trigger words")[1]
    blob = path.read_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    assert f"sha256                 {sha}" in text and f"AutoV2                 {sha[:10]}" in text
    (length,) = __import__("struct").unpack("<Q", blob[:8])
    assert f"model hash             {hashlib.sha256(blob[8 + length:]).hexdigest()}  (matches the file's sshs_model_hash)" in text


def test_info_on_a_file_without_metadata_tells_what_the_keys_say(tmp_path):
    tensors, _ = read(sd1_lora(tmp_path, "LoRA")[1])
    bare = write(tmp_path / "bare.safetensors", tensors)
    text = _info(bare)
    assert "architecture           unknown architecture (neither the metadata nor the layer widths name it" in text
    assert "network                LoRA, " in text and "text encoder           12 modules, dim 4, alpha 1.5" in text
    assert "metadata                 none from kohya's trainer" in text
    assert "model hash" in text and "matches" not in text


def test_info_on_a_hand_made_kohya_file_at_full_width(tmp_path):
    """kohya's own keys and metadata, written by hand: SDXL names, no alpha on one module, bf16."""
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for name, (out_f, in_f, rank) in {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (640, 2048, 8),
        "lora_unet_output_blocks_0_1_proj_in": (1280, 1280, 16),
        "lora_te2_text_model_encoder_layers_0_mlp_fc1": (5120, 1280, 8),
    }.items():
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, in_f, generator=gen).to(torch.bfloat16)
        tensors[f"{name}.lora_up.weight"] = torch.zeros(out_f, rank).to(torch.bfloat16)
        if rank == 8:
            tensors[f"{name}.alpha"] = torch.tensor(4.0).to(torch.bfloat16)
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": "8", "ss_optimizer": "bitsandbytes.optim.AdamW8bit",
                "ss_tag_frequency": json.dumps({"1_a": {"tok": 4, "x": 1}}), "ss_num_epochs": "4",
                "civitai.model": "12345"}
    path = write(tmp_path / "handmade.safetensors", tensors, metadata)
    text = _info(path)
    assert "architecture           SDXL (keys: lora_te1_/lora_te2_ or Stability-layout UNet names)" in text
    assert "bfloat16" in text
    assert "UNet                   2 modules, dim 8 (1 modules), 16 (1 modules), alpha 4 (1 modules), none (1 modules)" in text
    assert "TE2 (bigG)             1 modules, dim 8, alpha 4" in text
    assert "trigger words            tok" in text and "civitai.model: 12345" in text


def test_info_by_width_when_there_is_no_metadata(tmp_path):
    tensors = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 1024),
               "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.zeros(320, 4)}
    assert "SD2.x 512 (epsilon) (keys: text/cross-attention width 1024)" in _info(write(tmp_path / "w.safetensors", tensors))


def test_info_cli_gives_one_line_errors_for_wrong_files(tmp_path, capsys):
    from easytrain.cli import main
    from easytrain.families.sd.tiny import tiny_model_paths

    truncated = tmp_path / "cut.safetensors"
    blob = sd1_lora(tmp_path, "LoRA")[1].read_bytes()
    (length,) = __import__("struct").unpack("<Q", blob[:8])
    truncated.write_bytes(blob[:8 + length + 1000])  # a download that stopped early
    (tmp_path / "x.pt").write_bytes(b"PK")
    cases = {tiny_model_paths().single_file: "not a kohya-format LoRA file (this is a full checkpoint",
             truncated: "the file is incomplete", tmp_path / "none.safetensors": "no such LoRA file",
             tmp_path / "x.pt": "must be a .safetensors file"}
    for path, message in cases.items():
        assert main(["lora", "info", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_lora_help_imports_no_heavy_library():
    code = ("import sys, contextlib, io\nfrom easytrain.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['lora', 'merge', '--help'])\n"
            "print(' '.join(m for m in ('torch', 'diffusers', 'peft', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# ---- the checkpoint layout: every module a kohya LoRA can have, on full-size key layouts built in code ----


def _full_size_layout(bench_module: str, function: str, arch: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(bench_module, REPO / "bench" / f"{bench_module}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec.loader.exec_module(module)
        shapes = getattr(module, function)()
    finally:
        sys.path.remove(str(REPO / "bench"))
    from easytrain.lora_tools.layout import layout_from_header

    header = {k: {"shape": list(v), "dtype": "F16"} for k, v in shapes.items()}
    return layout_from_header(Path(f"{arch}.safetensors"), header, arch, arch)


def _counts(layout) -> dict:
    from collections import Counter

    return dict(Counter((s.name.split("_")[1], s.group) for s in layout.slots.values()))


def test_full_size_sd15_layout_has_kohyas_modules():
    layout = _full_size_layout("load_full_sd15", "sd15_original_shapes", "sd1")
    assert _counts(layout) == {("unet", "transformer"): 192, ("unet", "conv-block"): 86, ("te", "text"): 72}
    slot = layout.slots["lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2"]
    assert slot.key == "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.2.weight"
    assert layout.slots["lora_unet_down_blocks_2_downsamplers_0_conv"].key == "model.diffusion_model.input_blocks.9.0.op.weight"
    assert layout.slots["lora_unet_up_blocks_0_upsamplers_0_conv"].key == "model.diffusion_model.output_blocks.2.1.conv.weight"


def test_full_size_sdxl_layout_has_kohyas_modules_with_fused_thirds():
    layout = _full_size_layout("load_full_sdxl", "sdxl_original_shapes", "sdxl")
    assert _counts(layout) == {("unet", "transformer"): 722, ("unet", "conv-block"): 66, ("te1", "text"): 72,
                               ("te2", "text"): 192}
    v = layout.slots["lora_te2_text_model_encoder_layers_31_self_attn_v_proj"]
    assert v.key.endswith("resblocks.31.attn.in_proj_weight") and v.third == 2 and v.shape == (1280, 1280)
    assert layout.slots["lora_unet_output_blocks_2_2_conv"].shape == (1280, 1280, 3, 3)


@pytest.mark.parametrize("sdxl", [False, True])
def test_tiny_layouts_name_exactly_the_modules_the_trainer_exports(sdxl):
    from easytrain.lora_tools.layout import checkpoint_layout
    from easytrain.families.sd.tiny import tiny_model_paths
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths
    from easytrain.network.spec import NetworkSpec
    from tests._lora_tools_helpers import sd1_network, sdxl_base

    spec = NetworkSpec("LoCon", dim=2, alpha=1.0, conv_dim=2, conv_alpha=1.0)
    if sdxl:
        from easytrain.families.registry import family_for

        base = sdxl_base()
        adapter = family_for(base.arch)
        names = {t.kohya_name for t in adapter.network_targets(adapter.network_models(base), spec)}
        layout = checkpoint_layout(tiny_sdxl_paths().single_file)
    else:
        names = {s.target.kohya_name for s in sd1_network("LoCon").slots}
        layout = checkpoint_layout(tiny_model_paths().single_file)
    assert set(layout.slots) == names
