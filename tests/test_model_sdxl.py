"""SDXL base models: the shipped configs, the Stability single-file layout both ways, the tiny SDXL model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from easytrain.errors import UserError
from easytrain.families.sdxl.convert import IGNORED_KEYS, TEXT_PROJECTION_KEY, sdxl_source_keys
from easytrain.families.sdxl.load import SDXL_CONFIG_DIR, load_sdxl
from easytrain.families.sdxl.tiny import PROJECTION_DIM, TEXT_WIDTH_2, tiny_sdxl_paths

from _model_helpers import rewrite_keys, state_dicts_equal

PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def _part(model, part: str):
    """A component of a loaded BaseModel (its text encoders are a tuple) or of a diffusers pipeline."""
    if part.startswith("text_encoder") and hasattr(model, "text_encoders"):
        return model.text_encoders[1 if part.endswith("_2") else 0]
    return getattr(model, part)


@pytest.fixture(scope="module")
def paths():
    return tiny_sdxl_paths()


@pytest.fixture(scope="module")
def from_folder(paths):
    return load_sdxl(paths.diffusers_dir)


@pytest.fixture(scope="module")
def from_file(paths):
    return load_sdxl(paths.single_file)


def _config(part: str) -> dict:
    name = "scheduler_config.json" if part == "scheduler" else "config.json"
    return json.loads((SDXL_CONFIG_DIR / part / name).read_text(encoding="utf-8"))


def test_shipped_sdxl_configs_are_sdxl_base_1_0():
    unet = _config("unet")
    assert unet["addition_embed_type"] == "text_time"
    assert (unet["addition_time_embed_dim"], unet["projection_class_embeddings_input_dim"]) == (256, 2816)
    assert unet["transformer_layers_per_block"] == [1, 2, 10]
    assert unet["attention_head_dim"] == [5, 10, 20]
    assert (unet["cross_attention_dim"], unet["sample_size"], unet["use_linear_projection"]) == (2048, 128, True)
    assert unet["block_out_channels"] == [320, 640, 1280]
    assert unet["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert unet["up_block_types"] == ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    vae = _config("vae")
    assert (vae["scaling_factor"], vae["force_upcast"]) == (0.13025, True)
    first, second = _config("text_encoder"), _config("text_encoder_2")
    assert (first["hidden_size"], first["num_hidden_layers"], first["hidden_act"]) == (768, 12, "quick_gelu")
    assert second["architectures"] == ["CLIPTextModelWithProjection"]
    assert (second["hidden_size"], second["num_hidden_layers"], second["projection_dim"]) == (1280, 32, 1280)
    assert second["hidden_act"] == "gelu"
    assert _config("scheduler")["_class_name"] == "EulerDiscreteScheduler"
    pads = [json.loads((SDXL_CONFIG_DIR / t / "tokenizer_config.json").read_text())["pad_token"]
            for t in ("tokenizer", "tokenizer_2")]
    assert pads == ["<|endoftext|>", "!"]


def test_single_file_holds_every_mapped_key_and_nothing_else(paths, from_folder):
    models = [_part(from_folder, part) for part in PARTS]
    with safe_open(str(paths.single_file), framework="pt") as handle:
        keys = set(handle.keys())
        in_proj = handle.get_slice("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight")
        projection = handle.get_slice(TEXT_PROJECTION_KEY)
        label_emb = handle.get_slice("model.diffusion_model.label_emb.0.0.weight")
        proj_in = handle.get_slice("model.diffusion_model.input_blocks.4.1.proj_in.weight")
    assert keys == sdxl_source_keys(*models)
    assert {k.split(".")[0] for k in keys} == {"model", "first_stage_model", "conditioner"}
    assert in_proj.get_shape() == [3 * TEXT_WIDTH_2, TEXT_WIDTH_2]  # fused q/k/v
    assert projection.get_shape() == [TEXT_WIDTH_2, PROJECTION_DIM]  # OpenCLIP's x @ P, transposed
    assert label_emb.get_shape()[1] == from_folder.unet.config.projection_class_embeddings_input_dim
    assert len(proj_in.get_shape()) == 2  # SDXL's proj_in is linear
    assert any(k.startswith("model.diffusion_model.input_blocks.4.1.transformer_blocks.1.") for k in keys)


def test_diffusers_reads_our_single_file_as_the_folder(paths, from_folder):
    """An independent reader of the Stability layout (diffusers' own) gets the same weights."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_single_file(
        str(paths.single_file), config=str(paths.diffusers_dir), local_files_only=True
    )
    for part in PARTS:
        assert state_dicts_equal(getattr(pipe, part), _part(from_folder, part)), part


def _outputs(model, ids_1, ids_2):
    with torch.no_grad():
        first = model.text_encoders[0](ids_1, output_hidden_states=True)
        second = model.text_encoders[1](ids_2, output_hidden_states=True)
        context = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
        noise = model.unet(
            torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), 500, context,
            added_cond_kwargs={"text_embeds": second.text_embeds, "time_ids": time_ids},
        ).sample
        latents = model.vae.encode(torch.ones(1, 3, 64, 64) * 0.5).latent_dist.mean
    return context, second.text_embeds, noise, latents


def test_single_file_and_folder_load_the_same_model(from_folder, from_file):
    for part in PARTS:
        assert state_dicts_equal(_part(from_folder, part), _part(from_file, part)), part
    assert from_file.unet.config.addition_embed_type == "text_time"
    assert not any(p.requires_grad for p in from_file.unet.parameters())
    caption = "a red circle"
    tokenizer, tokenizer_2 = from_file.tokenizers
    ids_1 = tokenizer(caption, padding="max_length", max_length=77, return_tensors="pt").input_ids
    ids_2 = tokenizer_2(caption, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert tokenizer_2.pad_token == "!" and ids_2[0, -1] != ids_1[0, -1]
    a, b = _outputs(from_folder, ids_1, ids_2), _outputs(from_file, ids_1, ids_2)
    assert a[0].shape == (1, 77, from_file.unet.config.cross_attention_dim)
    assert a[1].shape == (1, PROJECTION_DIM)
    for x, y in zip(a, b):  # equal weights; the kernels may differ in the last bit on unaligned mapped memory
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_ckpt_in_half_precision_loads(tmp_path, paths, from_folder):
    state = {k: v.half() for k, v in load_file(str(paths.single_file)).items()}
    path = tmp_path / "xl.ckpt"
    torch.save({"state_dict": state, "easytrain.model": "tiny-sdxl"}, path)  # the tiny marker, as a .ckpt holds it
    model = load_sdxl(path, dtype=torch.float16)
    assert model.unet.dtype == torch.float16 and model.text_encoders[1].dtype == torch.float16
    assert model.tokenizers[1].pad_token == "!"
    expected = from_folder.text_encoders[1].text_projection.weight.half()
    assert torch.equal(model.text_encoders[1].text_projection.weight, expected)


def test_extra_keys_of_real_files_and_noobai_markers(tmp_path, paths):
    state = load_file(str(paths.single_file))
    for key in IGNORED_KEYS:
        state[key] = torch.zeros(1)
    state["v_pred"] = torch.zeros(0)
    state["ztsnr"] = torch.zeros(0)
    path = tmp_path / "noob.safetensors"
    with safe_open(str(paths.single_file), framework="pt") as handle:
        save_file(state, str(path), metadata=handle.metadata())  # the tiny marker picks the tiny configs
    model = load_sdxl(path)
    assert model.prediction_type == "v_prediction"
    assert model.noise_scheduler.config.prediction_type == "v_prediction"
    assert model.noise_scheduler.alphas_cumprod[-1] < 1e-6  # rescaled to zero terminal SNR
    plain = load_sdxl(path, prediction_type="epsilon", zero_terminal_snr=False)
    assert plain.noise_scheduler.alphas_cumprod[-1] > 1e-3


def test_missing_bigg_weight_is_named(tmp_path, paths):
    gone = "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_bias"
    path = rewrite_keys(paths.single_file, tmp_path / "broken.safetensors", lambda k: None if k == gone else k)
    # one fused in_proj_bias holds the q, k and v biases
    with pytest.raises(UserError, match=r"broken\.safetensors: 3 weights of the CLIPTextModelWithProjection .*" + gone):
        load_sdxl(path)


def test_unmarked_files_are_read_with_the_sdxl_1_0_configs(tmp_path, paths):
    """Without the tiny marker the shipped SDXL 1.0 configs apply, and a tiny file does not fit them."""
    path = tmp_path / "unmarked.safetensors"
    save_file(load_file(str(paths.single_file)), str(path))
    with pytest.raises(UserError, match=r"unmarked\.safetensors: \d+ weights of the UNet2DConditionModel are missing"):
        load_sdxl(path)


def test_other_architectures_are_refused(tmp_path):
    from easytrain.families.sd.tiny import tiny_model_paths

    with pytest.raises(UserError, match=r"tiny-sd1\.safetensors: no conditioner\.embedders\.1\.model\.text_projection key"):
        load_sdxl(tiny_model_paths().single_file)
    with pytest.raises(UserError, match="SDXL diffusers folder without its text_encoder_2/ subfolder"):
        load_sdxl(tiny_model_paths().diffusers_dir)
