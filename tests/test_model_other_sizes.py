"""An SD1-layout single file with sizes of its own (made by other code) loads with configs read off its shapes."""

from __future__ import annotations

import pytest
import torch

from easytrain.errors import UserError


def build_other_model(vocab: int = 49408):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        sample_size=16, block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=64,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8,
        norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32,
                        layers_per_block=2)
    config = CLIPTextConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                            num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu")
    return unet, vae, CLIPTextModel(config)


def test_single_file_of_other_sizes_loads_with_every_weight(tmp_path):
    from easytrain.families.sd.convert import write_single_file
    from easytrain.families.load import load_base_model

    unet, vae, text_encoder = build_other_model()
    path = tmp_path / "other.safetensors"
    write_single_file(unet, vae, text_encoder, path, {})
    model = load_base_model(str(path))  # the SD1 layout is enough to know the family
    assert model.arch == "sd1"
    assert model.unet.config.block_out_channels == (32, 64, 64)
    assert model.unet.config.down_block_types == ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    assert model.vae.config.block_out_channels == (32, 64) and model.vae.config.layers_per_block == 2
    assert model.text_encoder.config.num_hidden_layers == 3 and len(model.tokenizer) == 49408
    for source, loaded in ((unet, model.unet), (vae, model.vae), (text_encoder, model.text_encoder)):
        mine = loaded.state_dict()
        for name, tensor in source.state_dict().items():
            torch.testing.assert_close(mine[name], tensor, msg=name)
    # The UNet runs at its own cross-attention width.
    states = model.text_encoder(model.tokenizer(["a red circle"], return_tensors="pt").input_ids).last_hidden_state
    out = model.unet(torch.randn(1, 4, 16, 16), torch.tensor([10]), states).sample
    assert out.shape == (1, 4, 16, 16)


def test_a_foreign_vocabulary_is_refused_with_advice(tmp_path):
    from easytrain.families.sd.convert import write_single_file
    from easytrain.families.load import load_base_model

    unet, vae, text_encoder = build_other_model(vocab=1000)
    path = tmp_path / "other.safetensors"
    write_single_file(unet, vae, text_encoder, path, {})
    with pytest.raises(UserError, match="1000-token vocabulary"):
        load_base_model(str(path), "sd1")


def test_a_diffusers_folder_of_other_sizes_predicting_noise_is_sd1(tmp_path):
    import json

    from easytrain.families.detect import detect_architecture

    unet, _, _ = build_other_model()
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    unet.save_config(str(tmp_path / "unet"))
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "epsilon"}))
    found = detect_architecture(tmp_path)
    assert (found.arch, found.prediction_type, found.sure) == ("sd1", "epsilon", True)
