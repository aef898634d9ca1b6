"""`easytrain lora merge`: LoRAs baked into a checkpoint compute what diffusers / the network compute;
LoRAs merged into one LoRA by SVD."""

from __future__ import annotations

import json

import pytest
import torch

from tests._lora_tools_helpers import modules, product, read, sd1_lora, sd1_network, sdxl_lora, write
from tests._network_helpers import quiet, run_text_encoder, run_unet, tiny_parts, token_ids, unet_inputs


def _tiny_sd1():
    from easytrain.families.sd.tiny import tiny_model_paths

    return tiny_model_paths().single_file


def _load(path, arch="sd1"):
    from easytrain.families.load import load_base_model

    quiet()
    return load_base_model(str(path), arch)


def _diffusers_sd1(lora_path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**tiny_parts(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.load_lora_weights(str(lora_path))
    return pipe


@pytest.mark.parametrize("kind", ["LoRA", "LoCon"])
def test_merged_sd1_checkpoint_computes_what_diffusers_computes_with_the_lora(tmp_path, kind):
    from easytrain.lora_tools.merge import merge_into_checkpoint

    _network, lora = sd1_lora(tmp_path, kind)
    out = tmp_path / "merged.safetensors"
    report = merge_into_checkpoint(_tiny_sd1(), [(lora, 1.0)], out)
    assert report.tensors_changed == len(modules(read(lora)[0]))
    merged, pipe = _load(out), _diffusers_sd1(lora)
    inputs, ids = unet_inputs(), token_ids()
    want_unet, want_te = run_unet(pipe.unet, inputs), run_text_encoder(pipe.text_encoder, ids)
    assert (want_unet - run_unet(tiny_parts()["unet"], inputs)).abs().max() > 1e-3  # the LoRA changes the output
    torch.testing.assert_close(run_unet(merged.unet, inputs), want_unet, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(run_text_encoder(merged.text_encoder, ids), want_te, rtol=1e-4, atol=1e-5)


def test_merged_sdxl_checkpoint_computes_what_diffusers_computes_in_stability_layout(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from easytrain.lora_tools.merge import merge_into_checkpoint
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    _base, _network, lora = sdxl_lora(tmp_path)
    out = tmp_path / "merged-xl.safetensors"
    merge_into_checkpoint(tiny_sdxl_paths().single_file, [(lora, 1.0)], out)
    source, _ = read(tiny_sdxl_paths().single_file)
    written, _ = read(out)
    assert list(written) == sorted(source, key=list(source).index) or set(written) == set(source)
    assert all(written[k].dtype == source[k].dtype and written[k].shape == source[k].shape for k in source)
    # the fused bigG q/k/v changed in all three thirds
    fused = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
    rows = source[fused].shape[0] // 3
    assert all(not torch.equal(written[fused][i * rows:(i + 1) * rows], source[fused][i * rows:(i + 1) * rows])
               for i in range(3))

    merged = _load(out, "sdxl")
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_paths().diffusers_dir), local_files_only=True)
    pipe.load_lora_weights(str(lora))
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 400, (2, 77), generator=gen)
    for theirs, ours in zip((pipe.text_encoder, pipe.text_encoder_2), merged.text_encoders):
        with torch.no_grad():
            want = theirs(ids, output_hidden_states=True).hidden_states[-2]
            got = ours(ids, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    config = merged.unet.config
    text_width = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    inputs = dict(sample=torch.randn(2, 4, 16, 16, generator=gen), timestep=torch.tensor([10, 700]),
                  encoder_hidden_states=torch.randn(2, 9, config.cross_attention_dim, generator=gen),
                  added_cond_kwargs={"text_embeds": torch.randn(2, text_width, generator=gen),
                                     "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]] * 2)})
    with torch.no_grad():
        torch.testing.assert_close(merged.unet(**inputs).sample, pipe.unet(**inputs).sample, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["LoHa", "LoKr", "DoRA"])
def test_lycoris_and_dora_merge_as_the_network_computes_them(tmp_path, kind):
    """diffusers cannot load these; the network applies them as A1111/ComfyUI do (tests/test_network_lycoris.py,
    test_network_dora.py), so the merged checkpoint must compute the network's outputs."""
    from easytrain.lora_tools.merge import merge_into_checkpoint
    from easytrain.network.export import save_lora
    from easytrain.network.metadata import build_metadata

    network = sd1_network(kind, scale=0.3)
    lora = tmp_path / f"{kind}.safetensors"
    save_lora(network, lora, dtype="float", metadata=build_metadata(spec=network.spec, output_name=kind))
    out = tmp_path / "merged.safetensors"
    merge_into_checkpoint(_tiny_sd1(), [(lora, 1.0)], out)
    merged = _load(out)
    inputs, ids = unet_inputs(), token_ids()
    torch.testing.assert_close(run_unet(merged.unet, inputs), run_unet(network.unet, inputs), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(run_text_encoder(merged.text_encoder, ids), run_text_encoder(network.text_encoder, ids),
                               rtol=1e-4, atol=1e-5)


def _kohya_merge_lora(weight: torch.Tensor, found: dict, ratio: float) -> torch.Tensor:
    """networks/merge_lora.py's merge_to_sd_model for one layer, written out here (kohya is not installed):
    linear W + r * (up @ down) * scale, 1x1 conv through squeezed matrices, 3x3 conv through conv2d."""
    down, up = found["lora_down.weight"].float(), found["lora_up.weight"].float()
    dim = down.shape[0]
    scale = float(found["alpha"]) / dim if "alpha" in found else 1.0
    if weight.dim() == 2:
        if up.dim() == 4:
            up, down = up.squeeze(3).squeeze(2), down.squeeze(3).squeeze(2)
        return weight + ratio * (up @ down) * scale
    if tuple(down.shape[2:4]) == (1, 1):
        return weight + ratio * (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3) * scale
    conved = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    return weight + ratio * conved * scale


def test_merge_matches_kohyas_merge_lora_formula_to_fp16_rounding(tmp_path):
    from easytrain.lora_tools.layout import checkpoint_layout
    from easytrain.lora_tools.merge import merge_into_checkpoint

    _network, lora = sd1_lora(tmp_path, "LoCon")
    out = tmp_path / "merged-fp16.safetensors"
    merge_into_checkpoint(_tiny_sd1(), [(f"{lora}", 0.7)], out, precision="fp16")
    base, _ = read(_tiny_sd1())
    written, metadata = read(out)
    layout = checkpoint_layout(_tiny_sd1())
    grouped = modules(read(lora)[0])
    assert {written[k].dtype for k in written if base[k].is_floating_point()} == {torch.float16}
    for name, found in grouped.items():
        key = layout.slots[name].key
        want = _kohya_merge_lora(base[key].float(), found, 0.7).to(torch.float16)
        torch.testing.assert_close(written[key], want, rtol=1e-3, atol=1e-3)  # fp16 rounding, nothing more
        assert (written[key].float() - want.float()).abs().max() <= want.float().abs().max() * 2 ** -10
    untouched = set(base) - {layout.slots[n].key for n in grouped}
    assert all(torch.equal(written[k].float(), base[k].half().float()) for k in untouched)
    assert json.loads(metadata["easytrain.merged_loras"])[0]["weight"] == 0.7
    assert metadata["easytrain.model"] == "tiny-sd1"  # the base's metadata is kept


def test_two_loras_at_weights_add_their_changes(tmp_path):
    from easytrain.lora_tools.merge import merge_into_checkpoint

    _a, first = sd1_lora(tmp_path, "LoRA", seed=1)
    _b, second = sd1_lora(tmp_path, "LoRA", seed=2)
    out = tmp_path / "both.safetensors"
    merge_into_checkpoint(_tiny_sd1(), [(first, 0.5), (second, -1.0)], out)
    base, written = read(_tiny_sd1())[0], read(out)[0]
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    want = base[key] + 0.5 * product(modules(read(first)[0])[name]) - product(modules(read(second)[0])[name])
    torch.testing.assert_close(written[key], want, rtol=1e-5, atol=1e-6)


def test_merge_refuses_a_base_of_another_architecture_and_never_overwrites_inputs(tmp_path):
    from easytrain.errors import UserError
    from easytrain.lora_tools.merge import merge_into_checkpoint
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    _network, lora = sd1_lora(tmp_path, "LoRA")
    with pytest.raises(UserError, match="a LoRA for SD1.x, but the base .* SDXL"):
        merge_into_checkpoint(tiny_sdxl_paths().single_file, [(lora, 1.0)], tmp_path / "x.safetensors")
    # without metadata the keys still tell: the modules have no layer in that base
    tensors, _ = read(lora)
    bare = write(tmp_path / "bare.safetensors", tensors)
    with pytest.raises(UserError, match="have no layer in .*made for another architecture"):
        merge_into_checkpoint(tiny_sdxl_paths().single_file, [(bare, 1.0)], tmp_path / "x.safetensors")
    before = lora.read_bytes()
    with pytest.raises(UserError, match="is one of the inputs"):
        merge_into_checkpoint(_tiny_sd1(), [(lora, 1.0)], lora)
    assert lora.read_bytes() == before
    assert not (tmp_path / "x.safetensors").exists()


def test_loras_merge_into_one_by_svd(tmp_path):
    from easytrain.lora_tools.merge import merge_loras

    _a, first = sd1_lora(tmp_path, "LoCon", seed=1)
    _b, second = sd1_lora(tmp_path, "LoCon", seed=2)
    out = tmp_path / "one.safetensors"
    report = merge_loras([(first, 1.0), (second, 0.5)], out, rank=8, precision="float")
    assert report.worst_kept > 0.99999  # rank 4 + rank 4 fits in rank 8 exactly
    a, b = modules(read(first)[0]), modules(read(second)[0])
    merged, metadata = read(out)
    merged = modules(merged)
    assert set(merged) == set(a)
    for name in a:
        torch.testing.assert_close(product(merged[name]), product(a[name]) + 0.5 * product(b[name]),
                                   rtol=1e-4, atol=1e-5)
        assert merged[name]["lora_down.weight"].dim() == a[name]["lora_down.weight"].dim()
    assert metadata["ss_network_dim"] == "8" and metadata["ss_base_model_version"] == "sd_v1"

    low = merge_loras([(first, 1.0), (second, 0.5)], tmp_path / "low.safetensors", rank=4)
    assert low.mean_kept < 0.999  # rank 4 cannot hold both


def test_merge_cli_one_line_errors(tmp_path, capsys):
    from easytrain.cli import main

    _network, lora = sd1_lora(tmp_path, "LoRA")
    text = tmp_path / "notes.safetensors"
    text.write_text("this is a text file, not a model\n")
    assert main(["lora", "merge", str(_tiny_sd1()), str(text), "-o", str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a valid .safetensors file" in err
    assert main(["lora", "merge", str(lora), "-o", str(tmp_path / "o.safetensors")]) == 2
    assert "--rank" in capsys.readouterr().err
    assert main(["lora", "merge", str(_tiny_sd1()), f"{lora}:0.5", "-o", str(tmp_path / "o.safetensors"),
                 "--plain"]) == 0
    assert "Wrote" in capsys.readouterr().out
