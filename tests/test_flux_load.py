"""Loading Flux.1 / Chroma offline: the four ComfyUI files, fp8 and prefixes, all-in-one files,
diffusers folders, companions found and reported, and a full-size header."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from easytrain.errors import UserError
from easytrain.families.flux.detect import CHROMA, FLUX_DEV, detect_flux, file_parts
from easytrain.families.flux.load import (
    ae_config,
    clip_config,
    load_ae,
    load_flux,
    load_t5xxl,
    load_transformer,
    t5_config,
)
from easytrain.families.flux.model import FluxConfig, build_model
from easytrain.families.flux.tiny import build_tiny_text_and_ae, build_tiny_transformer, tiny_flux_paths
from easytrain.model.detect import read_safetensors_header


@pytest.fixture(scope="module")
def tiny():
    return tiny_flux_paths()


@pytest.fixture(scope="module")
def originals():
    return build_tiny_text_and_ae()


def _same(model, reference) -> bool:
    a, b = model.state_dict(), reference.state_dict()
    return set(a) == set(b) and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def _copy_tree(tiny, tmp_path: Path) -> Path:
    target = tmp_path / "ComfyUI"
    shutil.copytree(tiny.root / "models", target / "models")
    return target / "models"


def test_four_files_load_with_companions_found_and_reported(tiny, originals):
    parts = load_flux(tiny.dev, dtype=torch.float32)
    assert parts.kind == FLUX_DEV
    assert _same(parts.transformer, build_tiny_transformer(FLUX_DEV))
    assert _same(parts.clip_l, originals["clip_l"])
    assert _same(parts.t5, originals["t5"])
    assert _same(parts.vae, originals["vae"])
    assert parts.files == {"transformer": str(tiny.dev), "clip_l": str(tiny.clip_l), "t5xxl": str(tiny.t5xxl),
                           "vae": str(tiny.ae), "marker": "tiny-flux-dev"}
    assert "Picked for tiny-flux-dev.safetensors" in parts.message
    for path in (tiny.clip_l, tiny.t5xxl, tiny.ae):
        assert str(path) in parts.message
    assert parts.vae.config.latent_channels == 16
    assert parts.vae.config.scaling_factor == pytest.approx(0.3611)
    assert parts.vae.config.shift_factor == pytest.approx(0.1159)
    assert not any(p.requires_grad for p in parts.transformer.parameters())
    assert not parts.transformer.training
    assert len(parts.text_encoders) == len(parts.tokenizers) == 2
    assert parts.is_tiny


def test_chroma_takes_t5_only(tiny, originals):
    parts = load_flux(tiny.chroma, dtype=torch.float32)
    assert parts.kind == CHROMA and parts.clip_l is None
    assert parts.text_encoders == (parts.t5,) and parts.tokenizers == (parts.t5_tokenizer,)
    assert "clip_l" not in parts.files and "CLIP-L" not in parts.message
    assert _same(parts.transformer, build_tiny_transformer(CHROMA))


def test_tiny_text_encoders_encode(tiny):
    parts = load_flux(tiny.dev, dtype=torch.float32)
    t5_ids = parts.t5_tokenizer(["a photo of a red circle"], padding="max_length", truncation=True,
                                return_tensors="pt")
    assert t5_ids.input_ids.shape == (1, 32)
    hidden = parts.t5(input_ids=t5_ids.input_ids).last_hidden_state
    assert hidden.shape == (1, 32, parts.config.context_in_dim)
    clip_ids = parts.clip_tokenizer(["a photo of a red circle"], padding="max_length", max_length=77,
                                    truncation=True, return_tensors="pt").input_ids
    assert parts.clip_l(clip_ids).pooler_output.shape == (1, parts.config.vec_in_dim)


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
@pytest.mark.parametrize("storage", [torch.bfloat16, torch.float16, torch.float8_e4m3fn])
def test_transformer_storage_and_prefix(tmp_path, prefix, storage):
    reference = build_tiny_transformer(FLUX_DEV)
    path = tmp_path / "flux1-dev-test.safetensors"
    save_file({prefix + k: v.to(storage).contiguous() for k, v in reference.state_dict().items()}, str(path))
    assert detect_flux(read_safetensors_header(path).tensors) == FLUX_DEV
    model = load_transformer(path, torch.float32)
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, reference.state_dict()[name].to(storage).float()), name


def test_fp8_storage_of_the_block_linears(tiny):
    model = load_transformer(tiny.dev, torch.bfloat16, linear_dtype=torch.float8_e4m3fn)
    state = model.state_dict()
    assert state["double_blocks.0.img_attn.qkv.weight"].dtype == torch.float8_e4m3fn
    assert state["single_blocks.1.linear2.weight"].dtype == torch.float8_e4m3fn
    assert state["double_blocks.0.img_attn.qkv.bias"].dtype == torch.bfloat16
    assert state["double_blocks.0.img_attn.norm.query_norm.scale"].dtype == torch.bfloat16
    assert state["img_in.weight"].dtype == torch.bfloat16


def test_fp8_t5_loads_and_fp16_is_preferred(tmp_path, tiny, originals):
    models = _copy_tree(tiny, tmp_path)
    fp8 = models / "text_encoders" / "t5xxl_fp8_e4m3fn.safetensors"
    state = load_file(str(tiny.t5xxl))
    save_file({k: v.to(torch.float8_e4m3fn) for k, v in state.items()}, str(fp8))
    t5 = load_t5xxl(fp8, torch.float32)
    assert torch.equal(t5.shared.weight, originals["t5"].shared.weight.to(torch.float8_e4m3fn).float())
    assert t5.encoder.embed_tokens.weight is t5.shared.weight
    dev = models / "diffusion_models" / tiny.dev.name
    assert load_flux(dev, dtype=torch.float32).files["t5xxl"].endswith("t5xxl_fp16.safetensors")
    (models / "text_encoders" / "t5xxl_fp16.safetensors").unlink()
    assert load_flux(dev, dtype=torch.float32).files["t5xxl"] == str(fp8)


def test_scaled_fp8_t5(tmp_path, originals):
    state = load_file(str(tiny_flux_paths().t5xxl))
    scaled = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.ndim == 2 and key != "shared.weight":
            scale = value.abs().max() / 448.0
            scaled[key] = (value / scale).to(torch.float8_e4m3fn)
            scaled[key[: -len("weight")] + "scale_weight"] = scale.reshape(1)
        else:
            scaled[key] = value
    scaled["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    path = tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(scaled, str(path))
    t5 = load_t5xxl(path, torch.float32)
    q = "encoder.block.0.layer.0.SelfAttention.q.weight"
    torch.testing.assert_close(t5.state_dict()[q], state[q], rtol=0.07, atol=1e-3)


def test_comfyui_unet_and_clip_folders(tmp_path, tiny):
    root = tmp_path / "ComfyUI" / "models"
    for folder, source in (("unet", tiny.dev), ("clip", tiny.clip_l), ("clip", tiny.t5xxl), ("vae", tiny.ae)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / folder / source.name)
    (root / "clip" / "t5xxl_fp16.safetensors").rename(root / "clip" / "google_t5-v1_1-xxl_encoderonly.safetensors")
    (root / "vae" / "ae.safetensors").rename(root / "vae" / "flux_vae.safetensors")
    parts = load_flux(root / "unet" / tiny.dev.name, dtype=torch.float32)
    assert parts.files["t5xxl"] == str(root / "clip" / "google_t5-v1_1-xxl_encoderonly.safetensors")
    assert parts.files["vae"] == str(root / "vae" / "flux_vae.safetensors")


def test_answers_name_the_companions(tmp_path, tiny):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tiny.dev, lone / "model.safetensors")
    parts = load_flux(lone / "model.safetensors", dtype=torch.float32, clip_l=tiny.clip_l, t5xxl=tiny.t5xxl,
                      vae=tiny.ae)
    assert parts.message == ""
    assert parts.files["vae"] == str(tiny.ae)


def test_a_missing_companion_is_one_clear_line(tmp_path, tiny):
    models = _copy_tree(tiny, tmp_path)
    (models / "text_encoders" / "t5xxl_fp16.safetensors").unlink()
    with pytest.raises(UserError) as caught:
        load_flux(models / "diffusion_models" / tiny.dev.name, dtype=torch.float32)
    message = str(caught.value)
    assert "\n" not in message
    assert "T5-XXL" in message and str(models / "text_encoders") in message and "t5xxl" in message
    with pytest.raises(UserError, match="no such file"):
        load_flux(tiny.dev, dtype=torch.float32, vae=tmp_path / "nope.safetensors")


def test_an_sd_vae_is_not_taken_for_the_ae(tmp_path, tiny):
    models = _copy_tree(tiny, tmp_path)
    (models / "vae" / "ae.safetensors").unlink()
    save_file({"encoder.conv_out.weight": torch.zeros(8, 32, 3, 3), "decoder.conv_out.weight": torch.zeros(3, 32, 3, 3),
               "encoder.conv_in.weight": torch.zeros(32, 3, 3, 3)}, str(models / "vae" / "sd_vae.safetensors"))
    with pytest.raises(UserError, match=r"AE \(VAE\)"):
        load_flux(models / "diffusion_models" / tiny.dev.name, dtype=torch.float32)


def test_all_in_one_file(tmp_path, tiny, originals):
    state = {"model.diffusion_model." + k: v for k, v in load_file(str(tiny.dev)).items()}
    state.update({"text_encoders.clip_l.transformer." + k: v for k, v in load_file(str(tiny.clip_l)).items()})
    state.update({"text_encoders.t5xxl.transformer." + k: v for k, v in load_file(str(tiny.t5xxl)).items()})
    state.update({"vae." + k: v for k, v in load_file(str(tiny.ae)).items()})
    state["text_encoders.clip_l.logit_scale"] = torch.tensor(4.6)
    path = tmp_path / "checkpoints" / "flux1-dev-aio.safetensors"
    path.parent.mkdir()
    save_file(state, str(path), metadata={"easytrain.model": "tiny-flux-dev"})
    assert file_parts(read_safetensors_header(path).tensors) == ("transformer", "clip_l", "t5xxl", "vae")
    parts = load_flux(path, dtype=torch.float32)
    assert parts.message == ""
    assert {parts.files[p] for p in ("transformer", "clip_l", "t5xxl", "vae")} == {str(path)}
    assert _same(parts.t5, originals["t5"]) and _same(parts.vae, originals["vae"])
    assert _same(parts.transformer, build_tiny_transformer(FLUX_DEV))


@pytest.mark.parametrize("kind", [FLUX_DEV, CHROMA])
def test_diffusers_folder_converts_to_the_bfl_layout(tiny, originals, kind):
    folder = tiny.dev_diffusers if kind == FLUX_DEV else tiny.chroma_diffusers
    parts = load_flux(folder, dtype=torch.float32)
    assert parts.kind == kind
    assert parts.config == build_tiny_transformer(kind).config
    assert _same(parts.transformer, build_tiny_transformer(kind))
    assert _same(parts.t5, originals["t5"]) and _same(parts.vae, originals["vae"])
    if kind == FLUX_DEV:
        assert _same(parts.clip_l, originals["clip_l"])
    ids = parts.t5_tokenizer("a photo of a cat").input_ids
    assert ids == originals["t5_tokenizer"]("a photo of a cat").input_ids


def test_sharded_diffusers_transformer(tmp_path, tiny):
    folder = tmp_path / "transformer"
    folder.mkdir()
    state = load_file(str(tiny.dev_diffusers / "transformer" / "diffusion_pytorch_model.safetensors"))
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    weight_map = {}
    for name, part in halves.items():
        save_file({k: state[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert _same(load_transformer(folder, torch.float32), build_tiny_transformer(FLUX_DEV))


def test_diffusers_layout_single_file(tmp_path, tiny):
    path = tmp_path / "flux-transformer-diffusers.safetensors"
    shutil.copy(tiny.dev_diffusers / "transformer" / "diffusion_pytorch_model.safetensors", path)
    assert detect_flux(read_safetensors_header(path).tensors) == FLUX_DEV
    assert _same(load_transformer(path, torch.float32), build_tiny_transformer(FLUX_DEV))


def test_not_a_flux_file(tmp_path):
    path = tmp_path / "sd.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    with pytest.raises(UserError, match="not a Flux.1 or Chroma transformer"):
        load_flux(path)


def test_ae_in_the_diffusers_layout(tmp_path, originals):
    path = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in originals["vae"].state_dict().items()}, str(path))
    assert _same(load_ae(path, torch.float32), originals["vae"])


# ---- full size, on the meta device ------------------------------------------------------------


def _header_only_file(path: Path, shapes: dict[str, tuple], dtype: str = "BF16", itemsize: int = 2) -> Path:
    """A .safetensors file with a real header and no data written: a sparse file of the full size."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = itemsize
        for s in shape:
            size *= s
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.truncate(8 + len(raw) + offset)
    return path


def test_full_size_dev_header_is_detected_and_sized(tmp_path):
    shapes = {"model.diffusion_model." + k: tuple(v.shape) for k, v in build_model(FluxConfig()).state_dict().items()}
    assert len(shapes) == 780
    path = _header_only_file(tmp_path / "flux1-dev.safetensors", shapes)
    assert path.stat().st_blocks * 512 < 10_000_000  # sparse: nothing of the 23.8 GB was written
    header = read_safetensors_header(path)
    assert detect_flux(header.tensors) == FLUX_DEV
    config = FluxConfig.from_header(header.tensors)
    assert config == FluxConfig()
    assert (config.hidden_size, config.num_heads, config.depth, config.depth_single_blocks) == (3072, 24, 19, 38)
    model = build_model(config)
    total = sum(p.numel() for p in model.parameters())
    assert total == 11_901_408_320 and round(total / 1e9, 1) == 11.9


def test_full_size_text_encoder_and_ae_configs_from_shapes():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    from easytrain.families.flux.convert import ae_key_map
    from easytrain.families.flux.load import CONFIG_DIR

    values = {k: v for k, v in json.loads((CONFIG_DIR / "t5xxl.json").read_text()).items() if k != "model_type"}
    with init_empty_weights():
        t5 = T5EncoderModel(T5Config(**values))
    config = t5_config({k: tuple(v.shape) for k, v in t5.state_dict().items()})
    assert (config.d_model, config.d_ff, config.num_layers, config.num_heads, config.d_kv, config.vocab_size) == \
        (4096, 10240, 24, 64, 64, 32128)
    assert config.is_gated_act and config.feed_forward_proj == "gated-gelu"
    unique = {id(p): p.numel() for p in t5.parameters()}
    assert 4.7e9 < sum(unique.values()) < 4.9e9

    clip = clip_config({"text_model.embeddings.token_embedding.weight": (49408, 768),
                        "text_model.embeddings.position_embedding.weight": (77, 768),
                        **{f"text_model.encoder.layers.{i}.mlp.fc1.weight": (3072, 768) for i in range(12)}})
    assert (clip.hidden_size, clip.num_attention_heads, clip.num_hidden_layers, clip.eos_token_id) == (768, 12, 12, 49407)
    with init_empty_weights():
        CLIPTextModel(clip)

    ae_values = json.loads((CONFIG_DIR / "ae.json").read_text())
    with init_empty_weights():
        ae = AutoencoderKL.from_config(ae_values)
    names = list(ae.state_dict().keys())
    ldm = {key: tuple(ae.state_dict()[name].shape) for name, key in ae_key_map(names, 4).items()}
    assert "encoder.down.0.block.0.conv1.weight" in ldm
    config = ae_config(ldm)
    assert config["block_out_channels"] == [128, 256, 512, 512] and config["latent_channels"] == 16
    assert not config["use_quant_conv"] and not config["use_post_quant_conv"]
    assert (config["scaling_factor"], config["shift_factor"]) == (0.3611, 0.1159)


# ---- the seam's record ------------------------------------------------------------------------


def test_base_model_record(tiny):
    from easytrain.families.flux.load import FluxBaseModel, load_base_model, load_builtin_tiny
    from easytrain.families.flux.model import FluxTransformer

    base = load_base_model(tiny.dev, "flux-dev", torch.float32)
    assert isinstance(base, FluxBaseModel) and isinstance(base.unet, FluxTransformer)
    assert base.transformer is base.unet and base.prediction_type == "flow" and base.noise_scheduler is None
    assert len(base.text_encoders) == len(base.tokenizers) == 2 and base.text_encoder is base.text_encoders[0]
    assert base.is_tiny and base.message.startswith("Picked for") and base.config.depth == 2
    with pytest.raises(UserError, match="architecture is set to chroma"):
        load_base_model(tiny.dev, "chroma", torch.float32)
    chroma = load_builtin_tiny(CHROMA)
    assert chroma.arch == CHROMA and len(chroma.text_encoders) == 1


def test_a_t5_too_small_for_the_real_tokenizer(tmp_path, tiny, monkeypatch):
    from easytrain.families.flux import tokenizer

    monkeypatch.setattr(tokenizer, "load_t5_tokenizer", lambda length, **where: _big_tokenizer())
    path = tmp_path / "untagged.safetensors"
    save_file(load_file(str(tiny.dev)), str(path))  # no tiny marker: a real checkpoint gets the real tokenizers
    with pytest.raises(UserError, match="T5 tokenizer has 200 tokens but the text encoder has 96 rows"):
        load_flux(path, dtype=torch.float32, clip_l=tiny.clip_l, t5xxl=tiny.t5xxl, vae=tiny.ae)


def _big_tokenizer():
    class Big:
        def __len__(self):
            return 200
    return Big()


def test_tiny_diffusers_folders_run_in_diffusers_pipelines(tiny):
    from diffusers import ChromaPipeline, FluxPipeline

    for cls, folder, extra in ((FluxPipeline, tiny.dev_diffusers, {"guidance_scale": 3.5}),
                               (ChromaPipeline, tiny.chroma_diffusers, {})):
        pipe = cls.from_pretrained(folder, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        images = pipe("a photo of a red circle", height=64, width=64, num_inference_steps=2, max_sequence_length=32,
                      output_type="pt", generator=torch.Generator().manual_seed(0), **extra).images
        assert images.shape == (1, 3, 64, 64) and torch.isfinite(images).all()
