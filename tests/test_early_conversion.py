"""The denoiser converted to fp32 by a helper process while the run imports (model/early_conversion.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from easytrain.families.load import load_base_model
from easytrain.families.sd.tiny import tiny_model_paths
from easytrain.model import early_conversion
from easytrain.model.early_conversion import (EarlyConversion, converting, parts_to_convert, plan_items, start,
                                              weights_will_be_fp32)

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="shared memory by memfd_create: Linux")

PREFIX = "model.diffusion_model."
VAE, TEXT = "first_stage_model.", "cond_stage_model."


def _tiny_file_in(dtype, folder, source=None):
    """The tiny SD1 single file (or ``source``) with every tensor stored in ``dtype``, as full-size
    checkpoints are."""
    from safetensors import safe_open

    source = source or tiny_model_paths().single_file
    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()  # marks the tiny model's own vocabulary
    path = folder / f"tiny_{str(dtype).removeprefix('torch.')}.safetensors"
    save_file({k: v.to(dtype) for k, v in load_file(str(source)).items()}, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def half_file(tmp_path_factory):
    return _tiny_file_in(torch.float16, tmp_path_factory.mktemp("half"))


@pytest.fixture(scope="module")
def bf16_file(tmp_path_factory):
    return _tiny_file_in(torch.bfloat16, tmp_path_factory.mktemp("bf16"))


def _plan(path, mixed_precision="no", arch="sd1", text_outputs_cached=False, vae=None):
    return SimpleNamespace(precision=SimpleNamespace(mixed_precision=mixed_precision),
                           model=SimpleNamespace(base_model=str(path), architecture=arch, vae=vae),
                           text_outputs_cached=text_outputs_cached)


def _in_shared_memory(conversion: EarlyConversion, model) -> list[bool]:
    memory = conversion._memory
    first, last = memory.data_ptr(), memory.data_ptr() + memory.numel()
    return [first <= p.data_ptr() < last for p in model.parameters()]


def _finished(conversion: EarlyConversion) -> EarlyConversion:
    conversion.wait_for_helper()
    return conversion


def test_items_are_the_half_precision_tensors_under_the_prefix_in_file_order_on_cache_lines():
    header = {
        "model.diffusion_model.b": {"dtype": "F16", "shape": [3], "data_offsets": [40, 46]},
        "model.diffusion_model.a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
        "model.diffusion_model.f32": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
        "cond_stage_model.c": {"dtype": "F16", "shape": [4], "data_offsets": [16, 24]},
        "__metadata__": {"format": "pt"},
    }
    items = plan_items(header, PREFIX)
    assert [it.key for it in items] == ["model.diffusion_model.a", "model.diffusion_model.b"]
    assert [(it.src_offset, it.nbytes, it.dtype, it.shape) for it in items] == [(0, 8, "BF16", (2, 2)),
                                                                                (40, 6, "F16", (3,))]
    assert [it.dst_offset for it in items] == [0, 64]  # 16 bytes of fp32, then the next cache line


def test_items_follow_the_order_of_the_prefixes_each_in_file_order():
    header = {
        "first_stage_model.v2": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},
        "model.diffusion_model.u2": {"dtype": "F16", "shape": [1], "data_offsets": [2, 4]},
        "first_stage_model.v1": {"dtype": "F16", "shape": [1], "data_offsets": [4, 6]},
        "model.diffusion_model.u1": {"dtype": "F16", "shape": [1], "data_offsets": [6, 8]},
        "cond_stage_model.t": {"dtype": "F16", "shape": [1], "data_offsets": [8, 10]},
    }
    items = plan_items(header, (PREFIX, VAE))
    assert [it.key for it in items] == ["model.diffusion_model.u2", "model.diffusion_model.u1",
                                        "first_stage_model.v2", "first_stage_model.v1"]
    assert [it.dst_offset for it in items] == [0, 64, 128, 192]


def test_the_parts_converted_are_those_the_run_holds_in_fp32():
    # in the order the run reads them: the VAE encodes the latents before the first step
    assert parts_to_convert(_plan("x.safetensors")) == (VAE, PREFIX, TEXT)
    # frozen encoders whose outputs are cached stay in the file's precision (model/cast_on_use.py)
    assert parts_to_convert(_plan("x.safetensors", text_outputs_cached=True)) == (VAE, PREFIX)
    # a VAE of its own comes from its own file
    assert parts_to_convert(_plan("x.safetensors", vae="/models/vae.safetensors")) == (PREFIX, TEXT)
    assert parts_to_convert(_plan("x.safetensors", arch="sdxl")) == (VAE, PREFIX, "conditioner.embedders.")
    assert parts_to_convert(_plan("x.safetensors", arch="flux-dev")) == ()


@pytest.mark.parametrize("cast", ["torch", "numpy"])
@pytest.mark.parametrize("file_fixture", ["half_file", "bf16_file"])
def test_the_helper_converts_each_tensor_exactly(file_fixture, cast, request, tmp_path, monkeypatch):
    """With torch's cast, and numpy's where torch does not import."""
    path = request.getfixturevalue(file_fixture)
    if cast == "numpy":
        script = tmp_path / "worker_without_torch.py"
        script.write_text(f"import runpy, sys\nsys.modules['torch'] = None\n"
                          f"runpy.run_path({str(early_conversion._WORKER)!r}, run_name='__main__')\n", encoding="utf-8")
        monkeypatch.setattr(early_conversion, "_WORKER", script)
    stored = load_file(str(path))
    conversion = _finished(start(path, PREFIX))
    try:
        keys = [key for key in stored if key.startswith(PREFIX)]
        for key in keys:
            got = conversion.claim(path, key, torch.float32)
            assert got is not None and got.dtype == torch.float32, key
            assert torch.equal(got, stored[key].float()), key
        assert conversion.done == len(keys)
        assert conversion.claim(path, "first_stage_model.encoder.conv_in.weight", torch.float32) is None
        assert conversion.claim(path.with_name("other.safetensors"), keys[0], torch.float32) is None
    finally:
        conversion.close()


def test_a_run_in_another_precision_after_all_lets_the_helper_and_its_memory_go(half_file):
    conversion = start(half_file, PREFIX)
    try:
        key = conversion._items[0].key
        assert conversion.claim(half_file, key, torch.bfloat16) is None
        assert conversion._process.poll() is not None and conversion._fd == -1
        assert conversion.claim(half_file, key, torch.float32) is None
    finally:
        conversion.close()


def test_nothing_to_convert_starts_nothing(tmp_path):
    full = tmp_path / "fp32.safetensors"
    save_file({PREFIX + "w": torch.ones(4)}, str(full))
    assert start(full, PREFIX) is None  # already fp32
    assert start(tmp_path / "missing.safetensors", PREFIX) is None
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert start(broken, PREFIX) is None  # the loader reads it and says what is wrong
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    assert start(ckpt, PREFIX) is None


def test_loading_under_an_early_conversion_gives_the_same_model_bit_for_bit(half_file):
    alone = load_base_model(str(half_file), dtype=torch.float32)
    with converting(_plan(half_file)) as conversion:
        assert conversion is not None
        conversion.wait_for_helper()  # the helper had the whole import time: every UNet tensor is done
        early = load_base_model(str(half_file), dtype=torch.float32)
        assert conversion.done == len(conversion._items) > 0
        for part in ("unet", "vae", "text_encoder"):  # every weight is the helper's
            assert all(_in_shared_memory(conversion, getattr(early, part))), part
    for part in ("unet", "vae", "text_encoder"):
        expected, got = getattr(alone, part).state_dict(), getattr(early, part).state_dict()
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) and got[k].dtype == torch.float32 for k in expected), part


# A stand-in for the helper: the real worker, held back at its item number HELD_BACK_AT. "slow": it converts
# that item only once told to stop (a helper far behind); "die": it exits there (a helper that failed).
_HELD_BACK_WORKER = """
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("worker", {real!r})
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)
limit, mode, seen = int(os.environ["HELD_BACK_AT"]), os.environ["HELD_BACK_MODE"], [0]
caster = worker._caster
def held_back_caster():
    convert = caster()
    def held_back(source, out, item):
        if seen[0] == limit:
            if mode == "die":
                os._exit(3)
            while not worker._told_to_stop():
                time.sleep(0.005)
        seen[0] += 1
        convert(source, out, item)
    return held_back
worker._caster = held_back_caster
sys.exit(worker.main())
"""


@pytest.fixture
def held_back_helper(tmp_path, monkeypatch):
    """``hold(at, mode)``: the helpers started from now on stop converting at item ``at`` (see above)."""
    script = tmp_path / "held_back_worker.py"
    script.write_text(_HELD_BACK_WORKER.format(real=str(early_conversion._WORKER)), encoding="utf-8")

    def hold(at: int, mode: str = "slow") -> None:
        monkeypatch.setattr(early_conversion, "_WORKER", script)
        monkeypatch.setenv("HELD_BACK_AT", str(at))
        monkeypatch.setenv("HELD_BACK_MODE", mode)

    return hold


def _held_back_at(conversion: EarlyConversion, at: int) -> None:
    """Until the held-back helper has reported its ``at`` items (it starts beside the test)."""
    deadline = time.monotonic() + 60
    while conversion._heard() < at and conversion._process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert conversion._heard() == at


def _load_waiting_for_the_weights(path):
    """Loaded as a run loads it: the weights may arrive later, and are waited for before they are read."""
    from easytrain.model.deferred_copies import copying_on_a_thread

    with copying_on_a_thread() as copies:
        model = load_base_model(str(path), dtype=torch.float32)
    copies.wait()
    return model


def _same_models(expected_model, got_model, parts=("unet", "vae", "text_encoder")) -> None:
    for part in parts:
        expected, got = getattr(expected_model, part).state_dict(), getattr(got_model, part).state_dict()
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) and got[k].dtype == torch.float32 for k in expected), part


@pytest.mark.parametrize("mode", ["slow", "die"])
def test_tensors_the_helper_has_not_reached_are_handed_out_and_completed_before_they_are_read(
        half_file, held_back_helper, mode):
    """The loader takes the views of what the helper has not converted yet; the wait before the first step
    converts them (from the last back) and stops the helper, which had done 3: the model is the one the
    loader alone makes, whether the helper was far behind or gone."""
    alone = load_base_model(str(half_file), dtype=torch.float32)
    held_back_helper(3, mode)
    with converting(_plan(half_file)) as conversion:
        _held_back_at(conversion, 3)
        early = _load_waiting_for_the_weights(half_file)
        conversion.wait_for_helper()  # told to stop by the wait (or gone): it exits
        assert conversion._heard() == (4 if mode == "slow" else 3)  # it finishes the item in hand
        shared = {part: _in_shared_memory(conversion, getattr(early, part)) for part in ("unet", "text_encoder")}
        vae_shared = _in_shared_memory(conversion, early.vae)
    assert all(all(flags) for flags in shared.values())  # handed out, then completed in place
    assert sum(vae_shared) == 3  # the VAE comes first, and is read before the wait: only what was done
    _same_models(alone, early)


def test_without_a_later_wait_only_converted_tensors_are_taken(half_file, held_back_helper):
    alone = load_base_model(str(half_file), dtype=torch.float32)
    held_back_helper(3)
    with converting(_plan(half_file)) as conversion:
        _held_back_at(conversion, 3)
        early = load_base_model(str(half_file), dtype=torch.float32)  # outside copying_on_a_thread()
        taken = sum(sum(_in_shared_memory(conversion, getattr(early, part)))
                    for part in ("unet", "vae", "text_encoder"))
        assert taken == 3
        assert conversion._process.poll() is None  # still held back: nothing waited for it
    assert conversion._process.poll() is not None  # the run's end lets it go
    _same_models(alone, early)


def test_the_helper_goes_on_after_the_first_claim_until_the_wait_stops_it(half_file, held_back_helper):
    held_back_helper(3)
    conversion = start(half_file, PREFIX)
    try:
        key = conversion._items[-1].key
        view = conversion.claim(half_file, key, torch.float32, can_wait=True)
        assert view is not None and conversion._process.poll() is None  # still converting
        assert conversion.claim(half_file, key, torch.float32) is None  # not there yet: only for who can wait
        assert not conversion.holds_values(key)
        conversion.complete()
        assert torch.equal(view, load_file(str(half_file))[key].float())
        conversion.wait_for_helper()  # told to stop: it exits
    finally:
        conversion.close()


def test_the_helper_runs_at_the_lowest_priority_and_goes_when_the_run_goes(half_file):
    conversion = start(half_file, PREFIX)
    try:
        pid = conversion._process.pid
        if hasattr(os, "getpriority"):
            for _ in range(100):  # it lowers its own priority as it starts
                if os.getpriority(os.PRIO_PROCESS, pid) == 19 or conversion._process.poll() is not None:
                    break
                time.sleep(0.01)
            assert conversion._process.poll() is not None or os.getpriority(os.PRIO_PROCESS, pid) == 19
        conversion._process.stdin.close()  # what the run's death looks like from the helper
        conversion._process.wait(timeout=30)
    finally:
        conversion.close()


def test_a_helper_that_fails_leaves_everything_to_the_loader(half_file, monkeypatch):
    monkeypatch.setattr(early_conversion, "_WORKER", early_conversion._WORKER.with_name("no_such_worker.py"))
    alone = load_base_model(str(half_file), dtype=torch.float32)
    with converting(_plan(half_file)) as conversion:
        early = load_base_model(str(half_file), dtype=torch.float32)
        assert conversion is None or conversion.done == 0  # gone before or after it was given its job
    expected, got = alone.unet.state_dict(), early.unet.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_runs_that_will_not_train_in_fp32_or_families_without_a_prefix_start_nothing(half_file, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with converting(_plan(half_file, mixed_precision="bf16")) as conversion:
        assert conversion is None
    with converting(_plan("builtin:tiny")) as conversion:
        assert conversion is None
    with converting(_plan(half_file, arch="flux-dev")) as conversion:
        assert conversion is None  # Flux names no single-file prefix
    with converting(_plan(half_file, mixed_precision="fp16")) as conversion:
        assert conversion is not None  # fp16 with no GPU to be seen: the run trains in fp32
    assert early_conversion.current() is None


def test_the_fp32_guess_follows_the_visible_devices(monkeypatch):
    assert weights_will_be_fp32("no")
    assert not weights_will_be_fp32("bf16")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert weights_will_be_fp32("fp16")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    assert weights_will_be_fp32("fp16")


def test_the_worker_imports_nothing_of_easytrain():
    """It starts before the run has imported anything: it is a script of the standard library, numpy and
    (for its cast) torch."""
    code = ("import runpy, sys; sys.argv = ['w']; sys.stdin = open(__import__('os').devnull)\n"
            f"g = runpy.run_path({str(early_conversion._WORKER)!r}, run_name='not_main')\n"
            "import json; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'easytrain')))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_run_from_a_half_precision_file_trains_the_same_lora_with_the_early_conversion(half_file, tmp_path):
    from _train_helpers import Recorder, tiny_plan
    from easytrain.train.loop import run_training

    def train(folder, early: bool):
        plan = tiny_plan(folder, base_model=str(half_file), epochs=1)
        if not early:
            return load_file(str(run_training(plan, Recorder()).final_path))
        with converting(plan) as conversion:
            assert conversion is not None
            conversion.wait_for_helper()
            result = run_training(plan, Recorder())
            assert conversion.done == len(conversion._items)
        return load_file(str(result.final_path))

    expected, got = train(tmp_path / "alone", False), train(tmp_path / "early", True)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_run_trains_the_same_lora_with_a_helper_far_behind(half_file, tmp_path, held_back_helper):
    """The run's own wait converts what the helper has not reached, before the first step reads it."""
    from _train_helpers import Recorder, tiny_plan
    from easytrain.train.loop import run_training

    expected = load_file(str(run_training(tiny_plan(tmp_path / "alone", base_model=str(half_file), epochs=1),
                                          Recorder()).final_path))
    held_back_helper(5)
    plan = tiny_plan(tmp_path / "early", base_model=str(half_file), epochs=1)
    with converting(plan) as conversion:
        _held_back_at(conversion, 5)
        got = load_file(str(run_training(plan, Recorder()).final_path))
        conversion.wait_for_helper()
        assert conversion._heard() == 6 < len(conversion._items)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_sdxl_fused_text_attention_is_taken_from_the_helper_in_thirds(tmp_path):
    """OpenCLIP keeps q, k and v in one tensor; each third becomes a weight of its own, a view of the
    helper's conversion, and the model is the one the loader alone makes."""
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    path = _tiny_file_in(torch.float16, tmp_path, source=tiny_sdxl_paths().single_file)
    alone = load_base_model(str(path), dtype=torch.float32)
    with converting(_plan(path, arch="sdxl")) as conversion:
        conversion.wait_for_helper()
        early = load_base_model(str(path), dtype=torch.float32)
        assert conversion.done == len(conversion._items)
        bigg = early.text_encoders[1]
        attention = bigg.text_model.encoder.layers[0].self_attn
        assert all(_in_shared_memory(conversion, attention))
        for part in (early.unet, early.vae, early.text_encoders[0]):
            assert all(_in_shared_memory(conversion, part))
        # the projection is stored transposed: the loader makes it contiguous, a copy of its own
        names = [name for name, _ in bigg.named_parameters()]
        outside = [name for name, shared in zip(names, _in_shared_memory(conversion, bigg)) if not shared]
        assert outside == ["text_projection.weight"]
    _same_sdxl(alone, early)


def _same_sdxl(alone, early) -> None:
    parts = lambda model: {"unet": model.unet, "vae": model.vae, "text_1": model.text_encoders[0],
                           "text_2": model.text_encoders[1]}
    for name, expected_part in parts(alone).items():
        expected, got = expected_part.state_dict(), parts(early)[name].state_dict()
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) and got[k].dtype == torch.float32 for k in expected), name


def test_sdxl_with_the_helper_behind_reads_the_transposed_projection_from_the_file(tmp_path, held_back_helper):
    """A tensor stored transposed cannot be a view of values still to come (its copy would read them now):
    it is read from the file, as without the helper; the rest is completed before the wait returns."""
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    path = _tiny_file_in(torch.float16, tmp_path, source=tiny_sdxl_paths().single_file)
    alone = load_base_model(str(path), dtype=torch.float32)
    held_back_helper(2)
    with converting(_plan(path, arch="sdxl")) as conversion:
        _held_back_at(conversion, 2)
        early = _load_waiting_for_the_weights(path)
        conversion.wait_for_helper()
        assert conversion._heard() == 3
        assert all(_in_shared_memory(conversion, early.unet))
        bigg = early.text_encoders[1]
        names = [name for name, _ in bigg.named_parameters()]
        outside = [name for name, shared in zip(names, _in_shared_memory(conversion, bigg)) if not shared]
        assert outside == ["text_projection.weight"]
    _same_sdxl(alone, early)
