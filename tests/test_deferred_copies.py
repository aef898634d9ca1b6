"""Base weights converted on a thread while the run goes on (model/deferred_copies.py)."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from easytrain.families.load import load_base_model
from easytrain.families.sd.tiny import tiny_model_paths
from easytrain.model.deferred_copies import DeferredCopies, copying_on_a_thread


@pytest.fixture(scope="module")
def half_file(tmp_path_factory):
    """The tiny SD1 single file stored in fp16, as full-size checkpoints are: fp32 training converts it."""
    from safetensors import safe_open

    source = tiny_model_paths().single_file
    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()  # marks the tiny model's own vocabulary
    path = tmp_path_factory.mktemp("half") / "tiny_fp16.safetensors"
    save_file({k: v.half() for k, v in load_file(str(source)).items()}, str(path), metadata=metadata)
    return path


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_thread_writes_the_same_weights_as_loading_at_once(half_file):
    at_once = load_base_model(str(half_file), dtype=torch.float32)
    with copying_on_a_thread() as copies:
        later = load_base_model(str(half_file), dtype=torch.float32)
    assert copies.count == len(later.unet.state_dict()) + len(later.text_encoder.state_dict())
    copies.wait()
    copies.wait()  # a second wait is free
    for part in ("unet", "vae", "text_encoder"):
        expected, got = _state(getattr(at_once, part)), _state(getattr(later, part))
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) and got[k].dtype == torch.float32 for k in expected), part


def test_the_vae_is_ready_at_once_for_latent_caching(half_file):
    """Latents are cached before the wait: the VAE's weights are never left to the thread."""
    with copying_on_a_thread() as copies:
        later = load_base_model(str(half_file), dtype=torch.float32)
    at_once = load_base_model(str(half_file), dtype=torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(_state(at_once.vae).values(), _state(later.vae).values()))
    copies.wait()


def test_without_the_context_or_a_conversion_nothing_is_deferred(half_file):
    with copying_on_a_thread() as copies:
        load_base_model(str(half_file), dtype=torch.float16)  # the file's own dtype: nothing to convert
    assert copies.count == 0
    base = load_base_model(str(half_file), dtype=torch.float32)  # outside: converted at once
    assert base.unet.conv_in.weight.dtype == torch.float32


def test_an_error_on_the_thread_is_raised_by_wait():
    copies = DeferredCopies()
    copies.add(torch.empty(3), torch.ones(4))  # shapes that do not match
    copies.add(torch.empty(2), torch.ones(2))
    with pytest.raises((RuntimeError, ValueError)):
        copies.wait()
    copies.wait()  # reported once


def test_a_failing_load_finishes_the_thread_before_the_error_goes_on():
    target = torch.zeros(1000)
    with pytest.raises(ValueError):
        with copying_on_a_thread() as copies:
            copies.add(target, torch.ones(1000))
            raise ValueError("the loader failed")
    assert copies._thread is None and torch.equal(target, torch.ones(1000))


def test_a_run_waits_for_the_weights_before_they_go_to_the_device(half_file, tmp_path, monkeypatch):
    """The copy thread is held back until the run has built its network and cached its latents: the
    trained LoRA is still the one a run that loads everything at once trains."""
    import threading

    from _train_helpers import Recorder, tiny_plan
    from easytrain.model import deferred_copies
    from easytrain.train.loop import run_training

    def train(folder):
        result = run_training(tiny_plan(folder, base_model=str(half_file), epochs=1), Recorder())
        return load_file(str(result.final_path))

    expected = train(tmp_path / "at_once")

    released = threading.Event()
    work, wait = DeferredCopies._work, DeferredCopies.wait

    def held_back(self):
        released.wait(timeout=60)
        work(self)

    def release_then_wait(self):
        released.set()
        wait(self)

    monkeypatch.setattr(DeferredCopies, "_work", held_back)
    monkeypatch.setattr(DeferredCopies, "wait", release_then_wait)
    started = []
    original = deferred_copies.copying_on_a_thread
    monkeypatch.setattr(deferred_copies, "copying_on_a_thread",
                        lambda: started.append(True) or original())
    got = train(tmp_path / "later")
    assert started, "the run did not load through copying_on_a_thread"
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice values: Linux")
def test_the_copy_thread_runs_at_the_lowest_priority_and_the_caller_does_not():
    """Its copies take only idle cores; the thread that called it keeps its own priority."""
    import threading

    from easytrain.background import lowest_priority

    seen = {}

    def probe():
        lowest_priority()
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=probe)
    worker.start()
    worker.join()
    assert seen["thread"] == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_the_waiting_caller_copies_what_the_starved_thread_has_not():
    """A lowest-priority thread may get no core on a busy machine: wait() does the queued copies itself."""
    import threading

    held, done_before_release = threading.Event(), []
    copies = DeferredCopies()
    work = DeferredCopies._work
    copies._work = lambda: (held.wait(30), work(copies))
    targets = [torch.zeros(100) for _ in range(5)]
    for target in targets:
        copies.add(target, torch.ones(100))

    def release():
        done_before_release.append(all(torch.equal(t, torch.ones(100)) for t in targets))
        held.set()

    assert copies._thread is not None
    threading.Timer(1.0, release).start()
    copies.wait()
    assert done_before_release == [True]


def _half_copy(source, path):
    from safetensors import safe_open

    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
    save_file({k: v.half() for k, v in load_file(str(source)).items()}, str(path), metadata=metadata)
    return path


def test_kept_text_encoders_stay_in_the_files_precision_and_encode_exactly_as_converted_ones(tmp_path):
    """SDXL's pair, kept in fp16 and computing in fp32 layer by layer: the same context and pooled
    output, bit for bit, as the pair converted to fp32 up front; the UNet is still converted."""
    from easytrain.families.sdxl.text import encode_sdxl_tokens
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths
    from easytrain.model.cast_on_use import compute_in

    half = _half_copy(tiny_sdxl_paths().single_file, tmp_path / "tiny_sdxl_fp16.safetensors")
    converted = load_base_model(str(half), dtype=torch.float32)
    with copying_on_a_thread() as copies:
        kept = load_base_model(str(half), dtype=torch.float32)
    for text_encoder in kept.text_encoders:
        assert copies.keep_stored(text_encoder) == torch.float32
        assert compute_in(text_encoder, torch.float32) > 0
    copies.wait()
    ids = torch.randint(0, 100, (2, 1, 77), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = encode_sdxl_tokens(converted.text_encoders, ids, ids)
        got = encode_sdxl_tokens(kept.text_encoders, ids, ids)
    assert all(torch.equal(e, g) and g.dtype == torch.float32 for e, g in zip(expected, got))
    for text_encoder in kept.text_encoders:
        assert {p.dtype for p in text_encoder.parameters()} == {torch.float16}, "put back after the forward"
    assert {p.dtype for p in kept.unet.parameters()} == {torch.float32}
    assert all(torch.equal(a, b) for a, b in zip(_state(converted.unet).values(), _state(kept.unet).values()))


def test_a_unet_only_run_keeps_its_frozen_text_encoder_stored_and_trains_the_same_lora(half_file, tmp_path,
                                                                                     monkeypatch):
    """Text-encoder outputs cached (UNet only): the encoder stays in fp16 through the run (the held-out
    captions and the sample prompts encoded with it too), and the LoRA is the one a run that converts the
    encoder to fp32 trains."""
    from _train_helpers import Recorder, tiny_plan
    from easytrain.train import wiring
    from easytrain.train.loop import run_training

    def train(folder):
        prompts = folder / "prompts.txt"
        folder.mkdir(parents=True)
        prompts.write_text("a red square --s 2 --w 64 --h 64\n", encoding="utf-8")
        plan = tiny_plan(folder, base_model=str(half_file), epochs=1, train_parts="unet_only",
                         shuffle_captions=False, validation_split=0.25, sample_images=True,
                         sample_prompts=str(prompts), sample_every_n_epochs=1)
        assert plan.text_outputs_cached
        events = Recorder()
        lora = load_file(str(run_training(plan, events).final_path))
        assert not [e for e in events if "failed" in str(getattr(e, "text", ""))]
        assert list((folder / "out" / "sample").glob("*.png")), "no sample images"
        return lora

    kept_encoders, original = [], wiring._cast_on_use
    monkeypatch.setattr(wiring, "_cast_on_use", lambda *a: kept_encoders.extend(original(*a)) or kept_encoders)
    kept = train(tmp_path / "kept")
    assert len(kept_encoders) == 1
    assert {p.dtype for p in kept_encoders[0].parameters()} == {torch.float16}
    monkeypatch.setattr(wiring, "_cast_on_use", lambda *a: [])
    converted = train(tmp_path / "converted")
    assert kept.keys() == converted.keys()
    assert all(torch.equal(kept[k], converted[k]) for k in kept)


def test_an_sdxl_run_samples_with_its_pair_kept_in_fp16(tmp_path):
    """SDXL's pipeline gets the prompts' embeddings in the UNet's fp32 from a pair kept in fp16."""
    from _train_helpers import Recorder, tiny_plan
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths
    from easytrain.train.loop import run_training

    half = _half_copy(tiny_sdxl_paths().single_file, tmp_path / "tiny_sdxl_fp16.safetensors")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square --n green --s 2 --w 64 --h 64\n", encoding="utf-8")
    plan = tiny_plan(tmp_path, base_model=str(half), architecture="sdxl", epochs=1, train_parts="unet_only",
                     shuffle_captions=False, sample_images=True, sample_prompts=str(prompts),
                     sample_every_n_epochs=1)
    assert plan.text_outputs_cached
    events = Recorder()
    run_training(plan, events)
    assert not [e for e in events if "failed" in str(getattr(e, "text", ""))]
    assert list((plan.saving.output_dir / "sample").glob("*_00_*.png")), "no sample image"
