"""Loading base models: the tiny model as folder and single file, .ckpt, EMA and old layouts, offline."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from easytrain.errors import UserError
from easytrain.families.sd.convert import original_state_dict
from easytrain.families.load import load_base_model
from easytrain.families.sd.tiny import build_tiny_components, tiny_model_paths

from _model_helpers import rewrite_keys, state_dicts_equal

PARTS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="session")
def tiny_paths():
    return tiny_model_paths()


@pytest.fixture(scope="session")
def tiny_from_folder(tiny_paths):
    return load_base_model(str(tiny_paths.diffusers_dir))


def assert_same_weights(a, b):
    for part in PARTS:
        assert state_dicts_equal(getattr(a, part), getattr(b, part)), f"{part} differs"


def test_tiny_paths_are_cached_and_complete(tiny_paths, tmp_path):
    assert (tiny_paths.diffusers_dir / "model_index.json").is_file()
    assert tiny_paths.single_file.is_file()
    assert tiny_model_paths() == tiny_paths
    assert not [p for p in tiny_paths.diffusers_dir.parent.parent.iterdir() if p.name.startswith(".tiny-building")]


def test_tiny_cache_dir_argument_builds_a_fresh_copy(tmp_path):
    paths = tiny_model_paths(tmp_path / "cache")
    assert paths.single_file.is_relative_to(tmp_path)
    fresh = build_tiny_components()
    stored = load_file(str(paths.single_file))
    expected = original_state_dict(fresh["unet"], fresh["vae"], fresh["text_encoder"])
    assert stored.keys() == expected.keys()
    assert all(torch.equal(stored[k], expected[k]) for k in stored)
    assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" in stored
    assert "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in stored
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in stored


def test_builtin_tiny_loads_as_sd1_epsilon(tiny_from_folder):
    model = load_base_model("builtin:tiny")
    assert model.source == "builtin:tiny"
    assert (model.arch, model.prediction_type) == ("sd1", "epsilon")
    assert model.noise_scheduler.config.prediction_type == "epsilon"
    assert model.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert model.noise_scheduler.config.num_train_timesteps == 1000
    assert not any(p.requires_grad for p in model.unet.parameters())
    assert_same_weights(model, tiny_from_folder)


def test_single_file_matches_diffusers_folder(tiny_paths, tiny_from_folder):
    model = load_base_model(str(tiny_paths.single_file))
    assert (model.arch, model.prediction_type) == ("sd1", "epsilon")
    assert_same_weights(model, tiny_from_folder)
    ids = model.tokenizer("a photo of a red circle").input_ids
    assert ids == tiny_from_folder.tokenizer("a photo of a red circle").input_ids
    assert len(model.tokenizer) == model.text_encoder.config.vocab_size


def test_single_file_loads_in_half_precision(tiny_paths):
    model = load_base_model(str(tiny_paths.single_file), dtype=torch.float16)
    assert {p.dtype for p in model.unet.parameters()} == {torch.float16}
    assert {p.dtype for p in model.text_encoder.parameters()} == {torch.float16}


def test_loading_never_touches_the_network(tiny_paths, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access during model loading")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    load_base_model("builtin:tiny")
    load_base_model(str(tiny_paths.single_file))
    load_base_model(str(tiny_paths.diffusers_dir))
    from easytrain.families.registry import family_for
    from easytrain.model.load import load_clip_tokenizer

    for arch in ("sd1", "sd2", "sd2-v"):
        parts = family_for(arch).shipped_parts(arch)
        assert len(parts.make_tokenizer()) == 49408
    assert load_clip_tokenizer()("a cat").input_ids == [49406, 320, 2368, 49407]


def test_ema_copies_are_ignored_when_plain_weights_exist(tiny_paths, tiny_from_folder, tmp_path):
    ema_file = tmp_path / "with-ema.safetensors"
    state = load_file(str(tiny_paths.single_file))
    extra = {
        "model_ema." + k.removeprefix("model.").replace(".", ""): torch.zeros_like(v)
        for k, v in state.items() if k.startswith("model.diffusion_model.")
    }
    from safetensors.torch import save_file

    save_file({**state, **extra, "model_ema.num_updates": torch.tensor(7)}, str(ema_file),
              metadata={"easytrain.model": "tiny-sd1"})
    assert_same_weights(load_base_model(str(ema_file)), tiny_from_folder)


def test_ema_only_checkpoint_loads(tiny_paths, tiny_from_folder, tmp_path):
    def to_ema(key):
        if key.startswith("model.diffusion_model."):
            return "model_ema." + key.removeprefix("model.").replace(".", "")
        return key

    path = rewrite_keys(tiny_paths.single_file, tmp_path / "ema-only.safetensors", to_ema)
    assert_same_weights(load_base_model(str(path)), tiny_from_folder)


def test_old_text_encoder_layout_loads(tiny_paths, tiny_from_folder, tmp_path):
    def old_layout(key):
        return key.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")

    path = rewrite_keys(tiny_paths.single_file, tmp_path / "old-te.safetensors", old_layout)
    assert "cond_stage_model.transformer.embeddings.token_embedding.weight" in load_file(str(path))
    assert_same_weights(load_base_model(str(path)), tiny_from_folder)


def test_missing_weights_are_named(tiny_paths, tmp_path):
    def drop_one(key):
        return None if key == "model.diffusion_model.out.2.weight" else key

    path = rewrite_keys(tiny_paths.single_file, tmp_path / "broken.safetensors", drop_one)
    with pytest.raises(UserError, match=r"model\.diffusion_model\.out\.2\.weight"):
        load_base_model(str(path))


def test_weights_only_ckpt_loads(tiny_paths, tiny_from_folder, tmp_path):
    state = load_file(str(tiny_paths.single_file))
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": state, "global_step": 10, "easytrain.model": "tiny-sd1"}, ckpt)
    assert_same_weights(load_base_model(str(ckpt)), tiny_from_folder)
    unmarked = tmp_path / "unmarked.ckpt"
    torch.save({"state_dict": state}, unmarked)
    # without the marker it reads as SD1 and meets the full-size SD1 layout, which it lacks
    with pytest.raises(UserError, match="weights of the UNet2DConditionModel are missing"):
        load_base_model(str(unmarked))


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_malicious_ckpt_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "code-ran.txt"
    ckpt = tmp_path / "evil.ckpt"
    state = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(2, 2),
        "payload": _RunsCode(marker),
    }
    torch.save({"state_dict": state}, ckpt)
    with pytest.raises(UserError, match="contains code, which easytrain will not run; convert it to .safetensors"):
        load_base_model(str(ckpt), architecture="sd1")
    assert not marker.exists()


def test_architecture_answer_must_match_the_file_family(tmp_path):
    from _model_helpers import write_fake_checkpoint

    path = write_fake_checkpoint(tmp_path / "sd15.safetensors", "sd1")
    with pytest.raises(UserError, match="architecture is set to sd2, but the file is SD 1.x"):
        load_base_model(str(path), architecture="sd2")


def test_an_incomplete_sdxl_file_is_named_not_refused_as_unsupported(tmp_path):
    """SDXL trains now (arch/sdxl.py): a file holding only a few SDXL keys is reported with its name."""
    from _model_helpers import write_fake_checkpoint

    path = write_fake_checkpoint(tmp_path / "xl.safetensors", "sdxl")
    with pytest.raises(UserError, match="xl.safetensors") as info:
        load_base_model(str(path))
    assert "coming in a later version" not in str(info.value)


def test_bad_architecture_value(tiny_paths):
    with pytest.raises(UserError, match="architecture: must be auto or one of"):
        load_base_model(str(tiny_paths.single_file), architecture="sd3")


def test_diffusers_folder_with_v_prediction_scheduler(tiny_paths, tmp_path):
    import shutil

    folder = tmp_path / "vfolder"
    shutil.copytree(tiny_paths.diffusers_dir, folder)
    (folder / "easytrain_model.json").unlink()
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["prediction_type"] = "v_prediction"
    config_file.write_text(json.dumps(config))
    # unusual sizes: detection is unsure, so "auto" asks for an answer
    with pytest.raises(UserError, match="cannot tell the architecture"):
        load_base_model(str(folder))
    model = load_base_model(str(folder), architecture="sd1")
    assert model.prediction_type == "epsilon"  # an explicit answer wins


def test_sd2_openclip_text_encoder_layout_is_split_and_renamed():
    """SD2 files keep OpenCLIP names with fused q/k/v and one layer more than diffusers uses."""
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel

    from easytrain.families.sd.load import _text_sources
    from easytrain.model.load import TensorSource, fill

    config = CLIPTextConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu")
    torch.manual_seed(0)
    reference = CLIPTextModel(config)
    ref = reference.state_dict()
    p = "cond_stage_model.model."
    original = {
        p + "token_embedding.weight": ref["embeddings.token_embedding.weight"],
        p + "positional_embedding": ref["embeddings.position_embedding.weight"],
        p + "ln_final.weight": ref["final_layer_norm.weight"],
        p + "ln_final.bias": ref["final_layer_norm.bias"],
        p + "text_projection": torch.zeros(16, 8),
        p + "logit_scale": torch.tensor(1.0),
    }
    for i in range(3):  # layer 2 exists only in the file, as SD2's 24th layer does
        src = i if i < 2 else 0
        b, e = f"{p}transformer.resblocks.{i}.", f"encoder.layers.{src}."
        for param in ("weight", "bias"):
            original[f"{b}attn.in_proj_{param}"] = torch.cat(
                [ref[f"{e}self_attn.{x}_proj.{param}"] for x in "qkv"])
            original[f"{b}attn.out_proj.{param}"] = ref[f"{e}self_attn.out_proj.{param}"]
            original[f"{b}ln_1.{param}"] = ref[f"{e}layer_norm1.{param}"]
            original[f"{b}ln_2.{param}"] = ref[f"{e}layer_norm2.{param}"]
            original[f"{b}mlp.c_fc.{param}"] = ref[f"{e}mlp.fc1.{param}"]
            original[f"{b}mlp.c_proj.{param}"] = ref[f"{e}mlp.fc2.{param}"]
    with init_empty_weights():
        loaded = CLIPTextModel(config)
    names = list(loaded.state_dict().keys())
    source = TensorSource(original.keys(), original.__getitem__)
    fill(Path("sd2.safetensors"), loaded, _text_sources(Path("sd2.safetensors"), source, names, openclip=True),
          torch.float32)
    assert state_dicts_equal(loaded, reference)
    ids = torch.tensor([[49 % 50, 3, 7, 2]])
    assert torch.equal(loaded(ids).last_hidden_state, reference(ids).last_hidden_state)


def test_tiny_cache_race_keeps_the_winner_and_cleans_up(tmp_path, monkeypatch):
    from easytrain.families.sd import tiny

    final = tmp_path / f"tiny-v{tiny.TINY_VERSION}"

    def build_while_another_process_wins(staging):
        (staging / "complete").write_text("loser\n")
        final.mkdir()
        (final / "complete").write_text("winner\n")

    monkeypatch.setattr(tiny, "_build_tiny_cache", build_while_another_process_wins)
    paths = tiny.tiny_model_paths(tmp_path)
    assert paths.single_file.parent == final
    assert (final / "complete").read_text() == "winner\n"
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_tiny_cache_failed_build_leaves_nothing(tmp_path, monkeypatch):
    from easytrain.families.sd import tiny

    def broken(staging):
        (staging / "half-written").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(tiny, "_build_tiny_cache", broken)
    with pytest.raises(OSError, match="disk full"):
        tiny.tiny_model_paths(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_diffusers_folder_saved_as_fp16_variant_loads(tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    from easytrain.families.load import load_base_model
    from easytrain.families.sd.tiny import tiny_model_paths

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_paths().diffusers_dir), local_files_only=True)
    pipe.to(torch.float16).save_pretrained(str(tmp_path / "fp16"), variant="fp16")
    assert not list((tmp_path / "fp16" / "unet").glob("diffusion_pytorch_model.safetensors"))
    model = load_base_model(str(tmp_path / "fp16"), "sd1")
    reference = load_base_model("builtin:tiny")
    for (name, a), b in zip(model.unet.state_dict().items(), reference.unet.state_dict().values()):
        torch.testing.assert_close(a.float(), b.half().float(), msg=name)
