"""LoHa/LoKr export: LyCORIS key names, and the file's tensors rebuild peft's delta weights
by the formulas A1111/ComfyUI use (diffusers cannot load these files)."""

from __future__ import annotations

import json

import pytest
import torch

from tests._network_helpers import kohya_module_map, randomize_adapters, run_unet, tiny_parts, unet_inputs


def _kron(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2)


def loha_delta(t: dict, shape) -> torch.Tensor:
    rank = t["hada_w1_b"].shape[0]
    scale = t["alpha"].item() / rank
    return ((t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]) * scale).reshape(shape)


def lokr_delta(t: dict, shape) -> torch.Tensor:
    w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
    w2 = t["lokr_w2"] if "lokr_w2" in t else t["lokr_w2_a"] @ t["lokr_w2_b"]
    if "lokr_w1_b" in t or "lokr_w2_b" in t:
        rank = t["lokr_w1_b"].shape[0] if "lokr_w1_b" in t else t["lokr_w2_b"].shape[0]
        scale = t["alpha"].item() / rank
    else:
        scale = 1.0  # neither factor decomposed: readers ignore alpha
    return (_kron(w1, w2) * scale).reshape(shape)


DELTA = {"LoHa": loha_delta, "LoKr": lokr_delta}
KEYS = {
    "LoHa": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"},
    "LoKr": {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "alpha"},
}


@pytest.fixture(scope="module", params=["LoHa", "LoKr"])
def saved(request, tmp_path_factory):
    from easytrain.families.sd.targets import apply_network
    from easytrain.network.export import save_lora
    from easytrain.network.metadata import build_metadata
    from easytrain.network.spec import NetworkSpec

    kind = request.param
    parts = tiny_parts()
    spec = NetworkSpec(kind, dim=4, alpha=3.0, conv_dim=2, conv_alpha=1.0)
    network = apply_network(parts["unet"], parts["text_encoder"], spec, seed=0)
    randomize_adapters(network)
    path = tmp_path_factory.mktemp(kind) / "net.safetensors"
    save_lora(network, path, dtype="float", metadata=build_metadata(spec=spec, output_name="net"))
    return kind, network, path


def _modules(path) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    from safetensors import safe_open

    grouped: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():
            module, _, suffix = key.partition(".")
            grouped.setdefault(module, {})[suffix] = fh.get_tensor(key)
        return grouped, fh.metadata()


def test_keys_are_lycoris_names(saved):
    kind, network, path = saved
    modules, _ = _modules(path)
    assert set(modules) == {s.target.kohya_name for s in network.slots}
    for name, tensors in modules.items():
        assert set(tensors) <= KEYS[kind], name
        assert "alpha" in tensors and tensors["alpha"].dim() == 0
    if kind == "LoKr":  # tiny layers give both the full and the decomposed form
        assert any("lokr_w2_a" in t for t in modules.values())
        assert any("lokr_w2" in t for t in modules.values())


def test_file_rebuilds_peft_delta_weights(saved):
    kind, network, path = saved
    modules, _ = _modules(path)
    slots = {s.target.kohya_name: s for s in network.slots}
    for name, tensors in modules.items():
        layer = slots[name].layer
        expected = layer.get_delta_weight("default")
        got = DELTA[kind](tensors, layer.get_base_layer().weight.shape)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_merging_the_file_by_hand_gives_the_networks_output(saved):
    kind, network, path = saved
    modules, _ = _modules(path)
    fresh = tiny_parts()
    targets = kohya_module_map(fresh["unet"], fresh["text_encoder"])
    with torch.no_grad():
        for name, tensors in modules.items():
            weight = targets[name].weight
            weight += DELTA[kind](tensors, weight.shape)
    torch.testing.assert_close(run_unet(fresh["unet"], unet_inputs()), run_unet(network.unet, unet_inputs()),
                               rtol=1e-4, atol=1e-5)


def test_lycoris_metadata(saved):
    kind, network, path = saved
    _, meta = _modules(path)
    assert meta["ss_network_module"] == "lycoris.kohya"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1.0", "algo": kind.lower()}
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "3.0"
