"""`easytrain lora convert`: kohya <-> diffusers/peft, identical both ways, and diffusers loads the result."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from tests._lora_tools_helpers import read, sd1_lora, sdxl_lora, write
from tests._network_helpers import run_text_encoder, run_unet, tiny_parts, token_ids, unet_inputs


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _load_quietly_checked(pipe, path) -> list[str]:
    """Load ``path`` into ``pipe``; the warnings diffusers and peft logged."""
    import diffusers

    handler = _Collect()
    loggers = [logging.getLogger(name) for name in ("diffusers", "peft")]
    diffusers.utils.logging.set_verbosity_warning()
    for logger in loggers:
        logger.addHandler(handler)
    try:
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe.load_lora_weights(str(path))
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        diffusers.utils.logging.set_verbosity_error()
    return handler.messages + [str(w.message) for w in caught]


def _sd1_pipe():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**tiny_parts(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def _identical(a, b) -> None:
    (ta, ma), (tb, mb) = read(a), read(b)
    assert list(ta) == list(tb)
    for key in ta:
        assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), key
    assert ma == mb


@pytest.mark.parametrize("kind,dtype", [("LoRA", "fp16"), ("LoCon", "float")])
def test_sd1_round_trip_is_identical_and_diffusers_loads_it_without_complaint(tmp_path, kind, dtype):
    from easytrain.lora_tools.convert import convert

    _network, source = sd1_lora(tmp_path, kind, dtype=dtype, comment="trigger: zzz")
    as_diffusers, back = tmp_path / "diffusers.safetensors", tmp_path / "back.safetensors"
    assert convert(source, as_diffusers).direction == "kohya -> diffusers"
    keys = list(read(as_diffusers)[0])
    assert all(k.startswith(("unet.", "text_encoder.")) and k.endswith((".lora_A.weight", ".lora_B.weight"))
               for k in keys)
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in keys
    assert convert(as_diffusers, back).direction == "diffusers -> kohya"
    _identical(source, back)

    ours, theirs = _sd1_pipe(), _sd1_pipe()
    complaints = [m for m in _load_quietly_checked(ours, as_diffusers)
                  if "unexpected" in m.lower() or "not been" in m.lower() or "missing" in m.lower()]
    assert not complaints, complaints
    theirs.load_lora_weights(str(source))  # diffusers' own reading of the kohya file
    inputs, ids = unet_inputs(), token_ids()
    torch.testing.assert_close(run_unet(ours.unet, inputs), run_unet(theirs.unet, inputs), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(run_text_encoder(ours.text_encoder, ids), run_text_encoder(theirs.text_encoder, ids),
                               rtol=1e-4, atol=1e-5)
    assert (run_unet(ours.unet, inputs) - run_unet(tiny_parts()["unet"], inputs)).abs().max() > 1e-3
    base_te = run_text_encoder(tiny_parts()["text_encoder"], ids)
    assert (run_text_encoder(ours.text_encoder, ids) - base_te).abs().max() > 1e-3  # the text encoder is adapted too


def test_sdxl_round_trip_translates_stability_names_and_loads_in_diffusers(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from easytrain.lora_tools.convert import convert
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    _base, _network, source = sdxl_lora(tmp_path)
    as_diffusers, back = tmp_path / "d.safetensors", tmp_path / "back.safetensors"
    convert(source, as_diffusers)
    tensors, metadata = read(as_diffusers)
    assert {k.split(".")[0] for k in tensors} == {"unet", "text_encoder", "text_encoder_2"}
    assert not any("input_blocks" in k or "output_blocks" in k for k in tensors)
    assert "unet.up_blocks.0.upsamplers.0.conv.lora_A.weight" in tensors
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert adapter["unet.r"] == 4 and adapter["unet.rank_pattern"]  # the convs have rank 2
    convert(as_diffusers, back)
    _identical(source, back)

    def pipe():
        return StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_paths().diffusers_dir), local_files_only=True)

    ours, theirs = pipe(), pipe()
    complaints = [m for m in _load_quietly_checked(ours, as_diffusers) if "unexpected" in m.lower()]
    assert not complaints, complaints
    theirs.load_lora_weights(str(source))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 400, (1, 77), generator=gen)
    with torch.no_grad():
        for part in ("text_encoder", "text_encoder_2"):
            torch.testing.assert_close(getattr(ours, part)(ids).last_hidden_state,
                                       getattr(theirs, part)(ids).last_hidden_state, rtol=1e-4, atol=1e-5)
    for name, module in theirs.unet.named_modules():
        if hasattr(module, "lora_A") and "default_0" in module.lora_A:
            mine = ours.unet.get_submodule(name)
            torch.testing.assert_close(mine.get_delta_weight("default_0"), module.get_delta_weight("default_0"),
                                       rtol=1e-5, atol=1e-6)


def test_a_file_diffusers_wrote_without_alphas_converts_with_scale_one(tmp_path):
    from easytrain.lora_tools.convert import convert

    gen = torch.Generator().manual_seed(0)
    path = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    source = write(tmp_path / "pytorch_lora_weights.safetensors", {
        f"unet.{path}.lora.down.weight": torch.randn(4, 32, generator=gen),
        f"unet.{path}.lora.up.weight": torch.randn(32, 4, generator=gen),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight": torch.randn(4, 32),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight": torch.randn(32, 4),
    }, {"format": "pt"})
    out = tmp_path / "kohya.safetensors"
    convert(source, out)
    tensors, metadata = read(out)
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    assert float(tensors[f"{name}.alpha"]) == 4.0
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in tensors
    assert metadata["ss_network_module"] == "networks.lora" and metadata["ss_network_dim"] == "4"


def test_convert_refuses_lycoris_and_wrong_files_in_one_line(tmp_path, capsys):
    from easytrain.cli import main
    from easytrain.families.sd.tiny import tiny_model_paths

    _network, loha = sd1_lora(tmp_path, "LoHa")
    out = tmp_path / "o.safetensors"
    assert main(["lora", "convert", str(loha), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a LoHa file; the diffusers/peft LoRA format holds plain LoRA/LoCon" in err and err.count("\n") == 1
    assert main(["lora", "convert", str(tiny_model_paths().single_file), "-o", str(out)]) == 2
    assert "this is a full checkpoint, not a LoRA" in capsys.readouterr().err
    assert not out.exists()
