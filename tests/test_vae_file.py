"""A separate VAE: its fit read from headers (check, train, wizard), and the loader for every layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from _tools_helpers import assert_clean_error, run_cli
from easytrain.errors import UserError
from easytrain.families.sd import tiny
from easytrain.families.sd.convert import VAE_PREFIX, vae_key_map
from easytrain.model.vae_check import check_vae_fits, vae_shape
from easytrain.model.vae_file import load_vae
from easytrain.tui.state import vae_problem


def make_vae(seed: int = 5, **changes):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**{**tiny.VAE_CONFIG, **changes})


def original_state(vae, prefix: str = "") -> dict:
    """The VAE's weights under the original (A1111) names, as standalone VAE files ship them."""
    names = vae_key_map(vae.config, vae.state_dict().keys())
    state = {}
    for name, tensor in vae.state_dict().items():
        key = names[name][len(VAE_PREFIX):]
        if ".mid.attn_1." in key and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # 1x1 convs in the original layout
        state[prefix + key] = tensor.contiguous()
    return state


@pytest.fixture(scope="module")
def vae_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("vaes")
    vae = make_vae()
    files = {"original": root / "vae.safetensors", "checkpoint": root / "full.safetensors",
             "diffusers_file": root / "diffusion_pytorch_model.safetensors", "ckpt": root / "vae.ckpt",
             "folder": root / "vae_folder"}
    save_file(original_state(vae), str(files["original"]))
    save_file({**original_state(vae, VAE_PREFIX), "model.diffusion_model.x": torch.zeros(1)},
              str(files["checkpoint"]))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(files["diffusers_file"]))
    torch.save({"state_dict": original_state(vae)}, str(files["ckpt"]))
    vae.save_pretrained(str(files["folder"]))
    flux_like = make_vae(latent_channels=16)
    files["wrong_latents"] = root / "flux_like_vae.safetensors"
    save_file(original_state(flux_like), str(files["wrong_latents"]))
    files["wrong_widths"] = root / "wide_vae.safetensors"
    save_file(original_state(make_vae(block_out_channels=(32, 64, 64, 64))), str(files["wrong_widths"]))
    files["lora"] = root / "a_lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(files["lora"]))
    return {"vae": vae, **files}


@pytest.mark.parametrize("layout", ["original", "checkpoint", "diffusers_file", "ckpt", "folder"])
def test_every_layout_loads_the_same_weights(vae_files, layout):
    source = vae_files["vae"]
    like = dict(tiny.VAE_CONFIG, scaling_factor=0.13025)  # the base model's scale wins
    loaded = load_vae(str(vae_files[layout]), like)
    assert loaded.config.scaling_factor == 0.13025 and not loaded.training
    expected = source.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded.encode(pixels).latent_dist.mean, source.encode(pixels).latent_dist.mean)


def test_the_builtin_tiny_vae_loads_and_fits():
    assert load_vae("builtin:tiny", tiny.VAE_CONFIG).config.latent_channels == 4
    assert "fits the base model" in check_vae_fits("builtin:tiny", "builtin:tiny")


@pytest.mark.parametrize("layout", ["original", "checkpoint", "diffusers_file", "folder"])
def test_a_fitting_vae_passes_the_header_check(vae_files, layout):
    shape = vae_shape(vae_files[layout])
    assert (shape.latent_channels, shape.block_out_channels) == (4, (32, 32, 32, 32))
    assert "4 latent channels, fits the base model" in check_vae_fits(vae_files[layout], "builtin:tiny")


def test_a_ckpt_is_checked_when_it_loads(vae_files):
    assert check_vae_fits(vae_files["ckpt"], "builtin:tiny").endswith("(its fit is checked when it loads)")


def test_wrong_vaes_are_refused_naming_the_key_and_the_tensor(vae_files):
    with pytest.raises(UserError) as err:
        check_vae_fits(vae_files["wrong_latents"], "builtin:tiny")
    assert str(err.value).startswith(f"vae: {vae_files['wrong_latents']}: its latents have 16 channels "
                                     "(decoder.conv_in.weight is [32, 16, 3, 3]); the base model's VAE has 4")
    with pytest.raises(UserError, match=r"encoder blocks are \[32, 64, 64, 64\] channels wide"):
        check_vae_fits(vae_files["wrong_widths"], "builtin:tiny")
    with pytest.raises(UserError, match="looks like a LoRA"):
        check_vae_fits(vae_files["lora"], "builtin:tiny")
    with pytest.raises(UserError, match=r"vae: .*encoder.conv_out.weight has shape \[32, 32, 3, 3\] but the "
                                        r"base model's VAE needs \[8, 32, 3, 3\]"):
        load_vae(str(vae_files["wrong_latents"]), tiny.VAE_CONFIG)


def test_the_wizard_refuses_a_wrong_vae_with_the_same_words(vae_files, tmp_path):
    problem = vae_problem(str(vae_files["wrong_latents"]), "builtin:tiny", tmp_path)
    assert problem.startswith(f"{vae_files['wrong_latents']}: its latents have 16 channels")
    assert vae_problem(str(vae_files["original"]), "builtin:tiny", tmp_path) is None


def answers_with_vae(tmp_path: Path, vae) -> Path:
    from easytrain.demo import make_demo_dataset

    make_demo_dataset(tmp_path / "images")
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images",
                                "vae": str(vae)}))
    return path


def test_check_shows_the_vae_and_refuses_one_of_another_family(vae_files, tmp_path):
    good = run_cli("check", answers_with_vae(tmp_path / "good", vae_files["original"]))
    assert good.returncode == 0, good.stderr
    assert f"  vae: {vae_files['original']} (4 latent channels, fits the base model)" in good.stdout
    path = answers_with_vae(tmp_path / "bad", vae_files["wrong_latents"])
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}
    for command in ("check", "train"):
        assert_clean_error(run_cli(command, path), "vae: ", "its latents have 16 channels",
                           "decoder.conv_in.weight")
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def trained_lora(tmp_path: Path, **overrides) -> tuple[dict, dict]:
    from safetensors import safe_open

    from _train_helpers import Recorder, fast_plan
    from easytrain.train.loop import run_training

    plan = fast_plan(tmp_path, epochs=1, save_state=False, **overrides)
    result = run_training(plan, Recorder())
    with safe_open(str(result.final_path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_training_encodes_through_the_separate_vae(vae_files, tmp_path):
    plain, plain_meta = trained_lora(tmp_path / "plain")
    other, other_meta = trained_lora(tmp_path / "other", vae=str(vae_files["original"]))
    assert plain.keys() == other.keys()
    assert any(not torch.equal(plain[k], other[k]) for k in plain if k.endswith("lora_up.weight"))
    assert "ss_vae_name" not in plain_meta and other_meta["ss_vae_name"] == "vae.safetensors"
