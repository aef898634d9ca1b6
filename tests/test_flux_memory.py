"""The Flux memory estimate (families/flux/memory.py) and the meta-device trace behind it."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from easytrain.families.flux import memory as fm
from easytrain.memory_estimate import GIB


def test_the_table_module_imports_without_torch():
    code = ("import sys; import easytrain.families.flux.memory as m; "
            "m.estimate(m.FluxSetup(1024, 1024)); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_stored_counts_are_the_meta_models():
    from easytrain.families.flux import memory_trace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = memory_trace.counts()
    stored = fm.FLUX_MEMORY
    assert found["parameters"] == dict(stored.parameters)
    assert found["block_parameters"] == dict(stored.block_parameters)
    assert found["block_linear_weights"] == dict(stored.block_linear_weights)
    assert found["blocks"] == dict(stored.blocks)
    assert found["lora_per_dim"] == dict(stored.lora_per_dim)
    assert found["parameters"]["transformer"] == 11_901_408_320


def test_the_stored_activations_are_the_trace():
    """One traced configuration re-run (the others are traced by the same code): the table is current."""
    from easytrain.families.flux import memory_trace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = memory_trace.activation_bytes(512, fp8=True, checkpointing=True)
    assert found == fm.FLUX_MEMORY.activation_bytes[(512, "fp8", True)]


def test_each_lever_lowers_the_estimate_and_the_goals_are_met():
    for side in (512, 1024):
        totals = [found.total for _, found in fm.lever_estimates(side, side)]
        assert totals == sorted(totals, reverse=True) and len(set(totals)) == len(totals)
    bf16 = fm.estimate(fm.FluxSetup(1024, 1024))
    assert 22 < bf16.total_gib < 32               # kohya's docs: about 26 GB in bf16 (24 GB with fp8 base)
    name, found = fm.propose_levers(12, 1024, 1024)
    assert found.total_gib <= 12 and "swapped" in name
    name, found = fm.propose_levers(8, 512, 512)
    assert found.total_gib <= 8 and "swapped" in name
    assert fm.propose_levers(80, 1024, 1024)[0] == "bf16"
    assert fm.propose_levers(2, 1024, 1024) is None


def test_weights_by_lever():
    memory = fm.FLUX_MEMORY
    full = fm.transformer_bytes(fm.FluxSetup(512, 512))
    assert full == memory.parameters["transformer"] * 2
    fp8 = fm.transformer_bytes(fm.FluxSetup(512, 512, fp8_base=True))
    linear = sum(memory.block_linear_weights[k] * memory.blocks[k] for k in ("double", "single"))
    assert full - fp8 == linear
    swapped = fm.transformer_bytes(fm.FluxSetup(512, 512, fp8_base=True, blocks_to_swap=16))
    double = memory.block_linear_weights["double"] + (memory.block_parameters["double"] -
                                                      memory.block_linear_weights["double"]) * 2
    single = memory.block_linear_weights["single"] + (memory.block_parameters["single"] -
                                                      memory.block_linear_weights["single"]) * 2
    assert fp8 - swapped == 8 * double + 16 * single - double   # one double block in flight
    with pytest.raises(ValueError):
        fm.swap_counts(36)


def test_text_encoders_count_only_when_on_the_gpu():
    cached = fm.estimate(fm.FluxSetup(512, 512))
    clip = fm.estimate(fm.FluxSetup(512, 512, train_clip=True))
    uncached = fm.estimate(fm.FluxSetup(512, 512, text_outputs_cached=False))
    parts = dict(cached.parts)
    assert parts["CLIP-L"] == 0 and parts["T5-XXL"] == 0
    assert dict(clip.parts)["CLIP-L"] == fm.FLUX_MEMORY.parameters["clip_l"] * 2
    assert dict(uncached.parts)["T5-XXL"] == fm.FLUX_MEMORY.parameters["t5"] * 2
    assert fm.text_encode_bytes(t5_fp8=True) < fm.text_encode_bytes() < 10 * GIB
    lines = cached.lines()
    assert "Flux.1 at 512x512" in lines[0] and "transformer" in lines[1]


def test_activations_grow_with_pixels_and_batch():
    memory = fm.FLUX_MEMORY
    a512 = memory.activations(512 * 512, "bf16", True)
    a1024 = memory.activations(1024 * 1024, "bf16", True)
    assert a512 == memory.activation_bytes[(512, "bf16", True)]
    assert a1024 == memory.activation_bytes[(1024, "bf16", True)]
    assert a512 < memory.activations(768 * 768, "bf16", True) < a1024
    assert memory.activations(1024 * 1024, "bf16", False) > a1024
    one = dict(fm.estimate(fm.FluxSetup(1024, 1024)).parts)["activations"]
    two = dict(fm.estimate(fm.FluxSetup(1024, 1024, batch=2)).parts)["activations"]
    assert two == 2 * one


def test_lever_lines_for_check():
    lines = fm.lever_lines(1024, 1024, gpu_gib=12)
    assert lines[0].startswith("GPU memory for Flux.1 at 1024x1024")
    assert len(lines) == 1 + len(fm.LEVERS)
    assert lines[1].endswith("too much") and lines[4].endswith("fits")


def test_chroma_has_its_own_table():
    from easytrain.families.flux import memory_trace

    chroma = fm.memory_for("chroma")
    assert chroma.label == "Chroma" and fm.memory_for("dev") is fm.FLUX_MEMORY
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = memory_trace.counts("chroma")
    assert found["parameters"] == dict(chroma.parameters) and found["lora_per_dim"] == dict(chroma.lora_per_dim)
    assert found["block_parameters"] == dict(chroma.block_parameters)
    assert 8.5e9 < chroma.parameters["transformer"] < 9.0e9 and "clip_l" not in chroma.parameters
    flux = fm.estimate(fm.FluxSetup(1024, 1024, fp8_base=True, blocks_to_swap=16, optimizer="AdamW8bit"))
    ours = fm.estimate(fm.FluxSetup(1024, 1024, fp8_base=True, blocks_to_swap=16, optimizer="AdamW8bit",
                                    train_t5=True), chroma)
    assert dict(ours.parts)["T5-XXL"] > 0 and "CLIP-L" not in dict(ours.parts)
    assert fm.estimate(fm.FluxSetup(1024, 1024), chroma).total < fm.estimate(fm.FluxSetup(1024, 1024)).total
    assert flux.total_gib <= 12
    assert fm.lever_lines(512, 512, memory=chroma)[0].startswith("GPU memory for Chroma at 512x512")
    assert fm.text_encode_bytes(chroma) == chroma.parameters["t5"] * 2
