"""A full-size SDXL 1.0 single file (6.5 GiB fp16, made in code) loads with every tensor from its own key."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "load_full_sdxl.py"
NEEDED_MEMORY = 8 * 2**30  # the 6.5 GiB of fp16 weights stay mapped from the file (about 1.3 GiB resident at peak)
NEEDED_DISK = 8 * 2**30


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _skip_reason() -> str | None:
    memory = _available_memory()
    if memory is None or memory < NEEDED_MEMORY:
        found = "unknown" if memory is None else f"{memory / 2**30:.1f} GiB"
        return f"needs about {NEEDED_MEMORY / 2**30:.0f} GiB of available memory for a full-size SDXL (found {found})"
    disk = shutil.disk_usage(tempfile.gettempdir()).free
    if disk < NEEDED_DISK:
        return f"needs about {NEEDED_DISK / 2**30:.0f} GiB of free disk for the 6.5 GiB checkpoint (found {disk / 2**30:.1f} GiB)"
    return None


def _bench_module():
    spec = importlib.util.spec_from_file_location("load_full_sdxl", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def checkpoint_path(tmp_path):
    """Where the 6.5 GiB file goes; removed after the test (pytest keeps its last temporary folders)."""
    path = tmp_path / "sdxl.safetensors"
    yield path
    try:
        path.unlink(missing_ok=True)
    except OSError:  # still mapped (Windows): pytest's own clean-up removes it later
        pass


@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_full_size_sdxl_single_file(checkpoint_path):
    from easytrain.families.sd.convert import unet_key_map, vae_key_map
    from easytrain.families.sdxl.convert import bigg_source, clip_l_key_map
    from easytrain.families.sdxl.load import load_sdxl

    bench = _bench_module()
    sd15 = bench.sys.modules["load_full_sd15"]
    shapes = bench.sdxl_original_shapes()
    index_of = {key: i for i, key in enumerate(shapes)}
    path = checkpoint_path
    sd15.write_random_safetensors(path, shapes, torch.float16, pattern=True)

    model = load_sdxl(path, dtype=torch.float16)

    assert model.prediction_type == "epsilon"
    text_encoder, text_encoder_2 = model.text_encoders
    parts = dict(unet=model.unet, vae=model.vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2)
    for part, expected in bench.SDXL_COUNTS.items():
        assert sum(p.numel() for p in parts[part].parameters()) == expected, part
    sources = {
        "unet": unet_key_map(model.unet.config, model.unet.state_dict().keys()),
        "vae": vae_key_map(model.vae.config, model.vae.state_dict().keys()),
        "text_encoder": clip_l_key_map(text_encoder.state_dict().keys()),
        "text_encoder_2": {name: bigg_source(name)[0] for name in text_encoder_2.state_dict()},
    }
    read = set()
    for part, key_map in sources.items():
        for name, tensor in parts[part].state_dict().items():
            key = key_map[name]
            want = sd15.pattern_value(index_of[key])
            flat = tensor.view(-1)
            assert flat[0].item() == want and flat[-1].item() == want, f"{part}.{name} was not read from {key}"
            read.add(key)
    assert read == set(shapes)  # every key of the file is read, none is left over
    counts = bench.lora_module_counts(model.unet, text_encoder, text_encoder_2)
    assert counts == {"unet": 722, "unet_with_convs": 788, "text_encoder": 72, "text_encoder_2": 192}
    assert len(model.tokenizers[0]) == len(model.tokenizers[1]) == 49408  # the shipped real CLIP BPE
    assert model.tokenizers[1]("a cat", padding="max_length", max_length=6).input_ids == [49406, 320, 2368, 49407, 0, 0]
