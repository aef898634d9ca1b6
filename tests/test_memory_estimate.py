"""The GPU memory estimate: its table re-derived from the meta-device trace, and what `check` prints."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from easytrain import catalog
from easytrain.memory_estimate import (
    MEMORY, NETWORK_SIZE_FACTOR, OPTIMIZER_STATE_BYTES, TrainingSetup, estimate, has_estimate,
)

BENCH = Path(__file__).resolve().parents[1] / "bench" / "memory_trace.py"
AGREE = 0.03  # the stored coefficients and a fresh trace agree within 3%


@pytest.fixture(scope="module")
def trace():
    spec = importlib.util.spec_from_file_location("memory_trace", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tables_cover_every_architecture_optimizer_and_network_type():
    # every architecture has an estimate: a traced MEMORY entry or its family's own estimator (estimate_plan)
    assert [arch for arch in catalog.ARCHITECTURE_IDS if not has_estimate(arch)] == []
    assert set(MEMORY) <= set(catalog.ARCHITECTURE_IDS)
    assert set(OPTIMIZER_STATE_BYTES) == set(catalog.OPTIMIZERS)
    assert set(NETWORK_SIZE_FACTOR) == set(catalog.NETWORK_TYPES)


SHARING = [a for a in catalog.ARCHITECTURES.values() if a.same_models_as]


def test_an_architecture_sharing_anothers_models_has_no_configs_of_its_own(trace):
    assert SHARING, "sdxl-v shares SDXL's configs"
    for entry in SHARING:
        assert not (trace.config_folder(entry.same_models_as).parent / entry.id).exists()
        assert MEMORY[entry.id] is MEMORY[entry.same_models_as]


@pytest.mark.parametrize("arch", [a.id for a in catalog.ARCHITECTURES.values() if not a.same_models_as and a.id in MEMORY])
def test_parameter_counts_are_the_shipped_configs(trace, arch):
    stored = MEMORY[arch]
    assert trace.parameter_counts(trace.meta_models(arch)) == dict(stored.parameters)
    assert trace.lora_parameters_per_dim(arch) == dict(stored.lora_per_dim)
    assert stored.traced_side == catalog.native_resolution(arch)


def test_sdxl_activation_coefficients_match_a_fresh_trace(trace):
    """The figures behind SDXL's 12 GB claim: its UNet step with checkpointing, and trained text encoders."""
    stored = MEMORY["sdxl"]
    pixels = stored.traced_side ** 2
    unet = trace.activation_bytes("sdxl", precision="fp16", checkpointing=True) / pixels
    assert unet == pytest.approx(stored.activation_bytes_per_pixel[("fp16", True)], rel=AGREE)
    text = trace.text_activation_bytes("sdxl", precision="fp16", checkpointing=False)
    assert text == pytest.approx(stored.text_activation_bytes[("fp16", False)], rel=AGREE)


def test_sd1_activation_coefficient_without_checkpointing_matches_a_fresh_trace(trace):
    stored = MEMORY["sd1"]
    per_pixel = trace.activation_bytes("sd1", precision="fp16", checkpointing=False) / stored.traced_side ** 2
    assert per_pixel == pytest.approx(stored.activation_bytes_per_pixel[("fp16", False)], rel=AGREE)


def test_activations_grow_with_the_pixels():
    """The estimate scales the per-pixel figures; SD2's UNet traced at 512 and at 768 says that holds."""
    at_512, at_768 = MEMORY["sd2"].activation_bytes_per_pixel, MEMORY["sd2-v"].activation_bytes_per_pixel
    for key, value in at_512.items():
        assert at_768[key] == pytest.approx(value, rel=AGREE)


def sdxl_setup(**changes) -> TrainingSetup:
    values = dict(arch="sdxl", width=1024, height=1024, batch=1, mixed_precision="fp16", optimizer="AdamW8bit",
                  network_type="LoRA", dim=16, conv_dim=None, train_unet=True, train_text_encoder=False,
                  checkpointing=True, latents_cached=True, text_outputs_cached=True)
    return TrainingSetup(**{**values, **changes})


def test_sdxl_lora_at_1024_fits_12_gib_with_8bit_adam_and_checkpointing():
    assert estimate(sdxl_setup()).total_gib < 12
    assert estimate(sdxl_setup(text_outputs_cached=False)).total_gib < 12  # shuffled captions
    assert estimate(sdxl_setup(checkpointing=False)).total_gib > 12


def test_each_setting_moves_the_estimate_the_way_it_should():
    base = estimate(sdxl_setup()).tensors
    assert estimate(sdxl_setup(optimizer="AdamW")).tensors > base
    assert estimate(sdxl_setup(batch=2)).tensors > base
    assert estimate(sdxl_setup(mixed_precision="no")).tensors > 1.8 * base
    assert estimate(sdxl_setup(mixed_precision="bf16")).tensors == base
    assert estimate(sdxl_setup(train_text_encoder=True)).tensors > base
    assert estimate(sdxl_setup(latents_cached=False)).tensors > base
    assert estimate(sdxl_setup(text_outputs_cached=False)).tensors > base


# ---- what `check` prints --------------------------------------------------------------------------


def sdxl_check_lines(tmp_path, **answers) -> list[str]:
    """`check` on the tiny SDXL file with SDXL's memory-saving settings (plus ``answers``)."""
    from easytrain.commands.check import plan_lines
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths
    from _train_helpers import tiny_plan

    settings = dict(base_model=str(tiny_sdxl_paths().single_file), architecture="auto", resolution=1024,
                    mixed_precision="fp16", optimizer="AdamW8bit", gradient_checkpointing=True, batch_size=1,
                    network_dim=16, train_parts="unet_only", shuffle_captions=False)
    plan = tiny_plan(tmp_path, **{**settings, **answers})
    return plan_lines(plan)


def with_a_gpu(monkeypatch, memory_gib: float = 10.0) -> None:
    """A GPU for `check` to estimate against: on a CPU the tiny test model gets no GPU estimate at all."""
    from easytrain import machine

    monkeypatch.setattr(machine, "gpu_info", lambda: machine.GpuInfo("NVIDIA RTX A5000", memory_gib))


def test_check_shows_the_sdxl_estimate_and_no_clip_skip(tmp_path, monkeypatch):
    with_a_gpu(monkeypatch)
    lines = sdxl_check_lines(tmp_path)
    text = "\n".join(lines)
    memory = [line for line in lines if "GPU memory:" in line]
    assert memory == ["  GPU memory: about 7.3 GiB estimated for SDXL at 1024x1024, batch 1, fp16, AdamW8bit, "
                      "checkpointing, text-encoder outputs cached; this file is easytrain's tiny test model, "
                      "which needs far less"]
    assert "no GPU has confirmed yet" in text and "CUDA context" in text
    assert "clip skip 2" not in text and "clip skip n/a (SDXL always uses the penultimate layer)" in text
    assert "more than the" not in text  # 10 GiB is enough


def test_check_warns_when_the_estimate_exceeds_the_gpu(tmp_path, monkeypatch):
    """A full-size SDXL file (its header is all `check` reads) on an 8 GB card, captions shuffled."""
    from easytrain import machine
    from _model_helpers import write_fake_checkpoint

    monkeypatch.setattr(machine, "gpu_info", lambda: machine.GpuInfo("NVIDIA GeForce RTX 3060 Ti", 8.0))
    full_size = write_fake_checkpoint(tmp_path / "sdxl.safetensors", "sdxl")
    text = "\n".join(sdxl_check_lines(tmp_path, base_model=str(full_size), shuffle_captions=True))
    assert ("! GPU memory: about 8.9 GiB estimated, more than the 8 GiB of NVIDIA GeForce RTX 3060 Ti; try "
            "a lower resolution") in text
    assert "UNet 4.78 + text encoders 1.52 +" in text  # shuffled captions: encoded every step, on the GPU
    assert "tiny test model" not in text
    tiny = "\n".join(sdxl_check_lines(tmp_path, shuffle_captions=True))
    assert "GPU memory: about 8.9 GiB" in tiny and "more than the" not in tiny  # the tiny model fits anywhere


def test_check_says_a_clip_skip_set_for_sdxl_is_ignored(tmp_path):
    text = "\n".join(sdxl_check_lines(tmp_path, clip_skip=1))
    assert "! clip_skip 1 is ignored: SDXL always uses the penultimate layer of both text encoders" in text


def test_check_shows_clip_skip_and_an_estimate_for_sd1(tmp_path, monkeypatch):
    from easytrain.commands.check import plan_lines
    from _train_helpers import tiny_plan

    with_a_gpu(monkeypatch, 4.0)  # a small card: checkpointing stays on at 256 px
    text = "\n".join(plan_lines(tiny_plan(tmp_path)))
    assert "clip skip 2" in text
    assert "GPU memory: about" in text and "SD1.x at 256x256, batch 2, fp32, AdamW, checkpointing" in text


def test_a_clip_skip_set_for_sdxl_by_name_warns_in_the_plan_once(tmp_path):
    from easytrain.commands.check import plan_lines
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths
    from _train_helpers import tiny_plan

    plan = tiny_plan(tmp_path, base_model=str(tiny_sdxl_paths().single_file), architecture="sdxl", clip_skip=1)
    warning = "clip_skip 1 is ignored: SDXL always uses the penultimate layer of both text encoders"
    assert warning in plan.warnings
    assert sum(warning in line for line in plan_lines(plan)) == 1
    assert not any("clip_skip" in w for w in tiny_plan(tmp_path, clip_skip=1).warnings)  # SD1 uses it
