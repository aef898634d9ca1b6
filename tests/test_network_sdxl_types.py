"""LoCon, LoHa and LoKr on SDXL: kohya/LyCORIS files under SDXL's names, merged as the clients merge them.

The file's modules are matched to the Stability-layout checkpoint's own keys
(``lora_unet_input_blocks_1_0_in_layers_2`` -> ``model.diffusion_model.input_blocks.1.0.in_layers.2``,
``lora_te1_...`` -> ``conditioner.embedders.0.transformer....``) and to bigG's transformers
layers (``lora_te2_...``), as A1111 and ComfyUI do; the merged checkpoint must compute what
the trained network computes.
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from easytrain.families.sdxl.tiny import tiny_sdxl_paths
from tests._network_helpers import quiet, randomize_adapters
from tests.test_network_lycoris import DELTA, KEYS

UNET_KEYS = "model.diffusion_model."
TE1_KEYS = "conditioner.embedders.0.transformer."
LOCON_KEYS = {"lora_down.weight", "lora_up.weight", "alpha"}


def _load(path=None):
    from easytrain.families.load import load_base_model

    quiet()
    return load_base_model(str(path or tiny_sdxl_paths().single_file), "sdxl")


@pytest.fixture(scope="module", params=["LoCon", "LoHa", "LoKr"])
def saved(request, tmp_path_factory):
    return _saved(request.param, tmp_path_factory.mktemp(request.param))


def _saved(kind: str, folder):
    """A randomised network of ``kind`` on the tiny SDXL model (UNet, convs, both text encoders), saved."""
    from easytrain.families.registry import family_for
    from easytrain.network.build import build_network
    from easytrain.network.export import save_lora
    from easytrain.network.metadata import build_metadata
    from easytrain.network.spec import NetworkSpec

    base = _load()
    adapter = family_for(base.arch)
    spec = NetworkSpec(kind, dim=4, alpha=3.0, conv_dim=2, conv_alpha=1.0, train_text_encoder=True)
    models = adapter.network_models(base)
    network = build_network(models, adapter.network_targets(models, spec), spec, seed=0)
    randomize_adapters(network)
    path = folder / "net.safetensors"
    save_lora(network, path, dtype="float", metadata=build_metadata(spec=spec, output_name="net", arch="sdxl"))
    return kind, base, network, path


def _modules(path) -> dict[str, dict[str, torch.Tensor]]:
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():
            module, _, suffix = key.partition(".")
            grouped.setdefault(module, {})[suffix] = fh.get_tensor(key)
    return grouped


def _delta(kind: str, tensors: dict, shape) -> torch.Tensor:
    if kind in DELTA:
        return DELTA[kind](tensors, shape)
    down, up = tensors["lora_down.weight"], tensors["lora_up.weight"]
    return (up.flatten(1) @ down.flatten(1)).reshape(shape) * (tensors["alpha"].item() / down.shape[0])


def test_modules_are_kohyas_sdxl_names_with_the_conv_layers(saved):
    kind, _base, network, path = saved
    modules = _modules(path)
    assert set(modules) == {s.target.kohya_name for s in network.slots}
    assert {name.split("_")[1] for name in modules} == {"unet", "te1", "te2"}
    assert not any(name.startswith(("lora_unet_down_blocks", "lora_unet_up_blocks", "lora_te_")) for name in modules)
    assert "lora_unet_input_blocks_1_0_in_layers_2" in modules         # a resnet's 3x3 conv
    assert "lora_unet_middle_block_1_proj_in" in modules
    allowed = KEYS.get(kind, LOCON_KEYS)
    assert all(set(tensors) <= allowed and tensors["alpha"].dim() == 0 for tensors in modules.values())


def test_merged_into_the_stability_checkpoint_it_computes_what_the_network_computes(saved, tmp_path):
    kind, base, network, path = saved
    modules = _modules(path)
    source = tiny_sdxl_paths().single_file
    state = load_file(str(source))
    with safe_open(str(source), framework="pt") as fh:
        metadata = fh.metadata()
    by_name = {}
    for key in state:
        for prefix, lora_prefix in ((UNET_KEYS, "lora_unet_"), (TE1_KEYS + "text_model.", "lora_te1_text_model_")):
            if key.startswith(prefix) and key.endswith(".weight"):
                by_name[lora_prefix + key[len(prefix):-len(".weight")].replace(".", "_")] = key
    unmerged = {name for name in modules if not name.startswith("lora_te2_")}
    for name in sorted(unmerged):
        key = by_name[name]
        state[key] = state[key] + _delta(kind, modules[name], state[key].shape).to(state[key].dtype)
    merged_file = tmp_path / "merged.safetensors"
    save_file(state, str(merged_file), metadata=metadata)
    merged = _load(merged_file)
    bigg_layers = {f"lora_te2_text_model_{p.removeprefix('text_model.')}".replace(".", "_"): m
                   for p, m in merged.text_encoders[1].named_modules()}
    with torch.no_grad():
        for name in (n for n in modules if n.startswith("lora_te2_")):
            weight = bigg_layers[name].weight
            weight += _delta(kind, modules[name], weight.shape)

    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 400, (2, 77), generator=gen)
    for trained, fresh in zip(base.text_encoders, merged.text_encoders):
        with torch.no_grad():
            want = trained(ids, output_hidden_states=True).hidden_states[-2]
            got = fresh(ids, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    config = base.unet.config
    text_width = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    inputs = dict(sample=torch.randn(2, 4, 16, 16, generator=gen), timestep=torch.tensor([10, 700]),
                  encoder_hidden_states=torch.randn(2, 9, config.cross_attention_dim, generator=gen),
                  added_cond_kwargs={"text_embeds": torch.randn(2, text_width, generator=gen),
                                     "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]] * 2)})
    with torch.no_grad():
        adapted = network.unet(**inputs).sample
        torch.testing.assert_close(merged.unet(**inputs).sample, adapted, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(_load().unet(**inputs).sample, adapted, rtol=1e-3, atol=1e-4)  # it did change


def test_diffusers_sdxl_pipeline_takes_every_locon_module(tmp_path):
    """diffusers reads kohya LoRA/LoCon files (not LoHa/LoKr: the merge above checks those)."""
    from diffusers import StableDiffusionXLPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    _kind, _base, _network, path = _saved("LoCon", tmp_path)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_paths().diffusers_dir), local_files_only=True)
    pipe.load_lora_weights(str(path))
    names = set(_modules(path))
    for part, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te1_"), ("text_encoder_2", "lora_te2_")):
        adapted = sum(isinstance(m, BaseTunerLayer) for m in getattr(pipe, part).modules())
        assert adapted == sum(n.startswith(prefix) for n in names), part
