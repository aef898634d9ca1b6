"""A full-size SD1.5-shaped single file (2 GB, made in code) loads with every tensor from its own key."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "load_full_sd15.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("load_full_sd15", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.disk_usage("/tmp" if Path("/tmp").exists() else ".").free < 8 * 2**30,
                    reason="needs about 2 GiB of free disk for the checkpoint")
def test_full_size_sd15_single_file(tmp_path):
    from easytrain.families.sd.convert import clip_key_map, unet_key_map, vae_key_map
    from easytrain.families.load import load_base_model

    bench = _bench_module()
    shapes = bench.sd15_original_shapes()
    assert len(shapes) == 686 + 248 + 196
    index_of = {key: i for i, key in enumerate(shapes)}
    path = tmp_path / "sd15.safetensors"
    bench.write_random_safetensors(path, shapes, torch.float16, pattern=True)

    model = load_base_model(str(path), dtype=torch.float16)

    assert (model.arch, model.prediction_type) == ("sd1", "epsilon")
    for part, expected in bench.SD15_COUNTS.items():
        assert sum(p.numel() for p in getattr(model, part).parameters()) == expected, part
    for module, key_map in (
        (model.unet, unet_key_map(model.unet.config, model.unet.state_dict().keys())),
        (model.vae, vae_key_map(model.vae.config, model.vae.state_dict().keys())),
        (model.text_encoder, clip_key_map(model.text_encoder.state_dict().keys())),
    ):
        for name, tensor in module.state_dict().items():
            want = bench.pattern_value(index_of[key_map[name]])
            flat = tensor.view(-1)
            assert flat[0].item() == want and flat[-1].item() == want, f"{name} was not read from {key_map[name]}"
    assert len(model.tokenizer) == 49408
