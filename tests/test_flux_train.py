"""Flux.1 dev and Chroma trained as a user trains them: `easytrain train FILE` on the tiny four-file layout.

The answers name the tiny transformer file (architecture auto); CLIP-L, T5-XXL and the AE are found next to
it, as in a ComfyUI models/ tree. 64 px images, a few steps: samples, validation loss, saved states and
--resume; the file loaded by diffusers and checked against kohya's module set from the checkpoint headers;
block swap and fp8 storage inside the training loop.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file

from _train_helpers import Recorder, make_colour_dataset
from easytrain.families.flux.tiny import tiny_flux_paths
from easytrain.train import events as ev
from easytrain.train.control import TrainControl
from easytrain.train.loop import run_training

DIM = 4


@pytest.fixture(scope="module")
def paths():
    return tiny_flux_paths()


def flux_answers(root: Path, base_model: Path, **overrides) -> Path:
    """An answers file for a short CPU run of a tiny Flux file at 64 px; returns its path."""
    images = make_colour_dataset(root / "images", size=64)
    prompts = root / "prompts.txt"
    prompts.write_text("colours, red square --w 64 --h 64 --s 3 --d 5\n", encoding="utf-8")
    data = dict(
        schema_version=1, base_model=str(base_model), architecture="auto", image_folder=str(images),
        output_folder=str(root / "out"), output_name="flux", optimizer="AdamW", network_dim=DIM,
        network_alpha=2.0, unet_lr=2e-3, text_encoder_lr=1e-3, scheduler="constant", resolution=64,
        batch_size=2, epochs=2, save_every_n_epochs=1, save_state=True, mixed_precision="no",
        save_precision="float", cache_latents="memory", bucket_no_upscale=True, train_parts="both",
        sample_images=True, sample_prompts=str(prompts), sample_every_n_epochs=1, validation_split=0.25,
        tag_summary="none", seed=3,
    )
    data.update(overrides)
    path = root / "answers.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def plan_of(answers_path: Path):
    from easytrain import answers as answers_file
    from easytrain.plan import TrainPlan

    return TrainPlan.from_answers(answers_file.load(answers_path))


def _estimate_stand_in():
    """`train` prints check's plan, memory estimate included. Until the estimate knows Flux (branch fluxprod:
    memory_estimate.estimate_plan) it would stop on a KeyError, so the plan's memory lines are left out here."""
    from easytrain import memory_estimate
    from easytrain.commands import check

    if hasattr(memory_estimate, "estimate_plan") or "flux-dev" in memory_estimate.MEMORY:
        return contextlib.nullcontext()
    return mock.patch.object(check, "memory_lines", lambda plan, model: ([], []))


def cli_train(*args: str) -> tuple[int, str]:
    """`easytrain train ... --plain` in this process; (exit code, what it printed)."""
    from easytrain.cli import main

    out = io.StringIO()
    with _estimate_stand_in(), contextlib.redirect_stdout(out):
        code = main(["train", *args, "--plain"])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def whole(tmp_path_factory, paths):
    """An uninterrupted CLI run on the tiny Flux-dev file: 3 training images (1 held back), 2 steps an epoch."""
    root = tmp_path_factory.mktemp("flux-whole")
    answers = flux_answers(root, paths.dev)
    code, printed = cli_train(str(answers))
    assert code == 0, printed
    return root, printed


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, paths):
    """The same run stopped after step 3 (mid epoch 2), then finished with `train FILE --resume`."""
    root = tmp_path_factory.mktemp("flux-stopped")
    answers = flux_answers(root, paths.dev)
    control = TrainControl()
    events = Recorder()

    def sink(event):
        events(event)
        if isinstance(event, ev.StepEnded) and event.step == 3:
            control.request_stop("test stop")

    stopped = run_training(plan_of(answers), sink, control)
    assert isinstance(stopped.outcome, ev.RunStopped) and stopped.steps == 3
    code, printed = cli_train(str(answers), "--resume")
    assert code == 0, printed
    return root, printed


def test_cli_trains_flux_from_the_four_files(whole, paths):
    root, printed = whole
    out = root / "out"
    assert "training flux on cpu: 4 steps" in printed
    assert (out / "flux.safetensors").is_file() and (out / "flux-000001.safetensors").is_file()
    assert (out / "flux-000001-state" / "state.json").is_file()
    # the validation loss is measured on the held-back image at every saved file
    assert printed.count("validation loss") >= 2
    rows = (out / "flux.metrics.csv").read_text().splitlines()
    assert rows[0].endswith("validation_loss") and any(r.split(",")[-1] for r in rows[1:])


def test_samples_are_written_and_not_black(whole):
    import numpy as np
    from PIL import Image

    root, printed = whole
    samples = sorted((root / "out" / "sample").glob("flux_e*_00_*.png"))
    assert len(samples) == 2, printed
    for sample in samples:
        pixels = np.asarray(Image.open(sample).convert("RGB"), dtype=np.float32)
        assert pixels.shape == (64, 64, 3)
        assert pixels.max() > 20 and pixels.std() > 1, sample


def test_clip_l_trains_beside_the_transformer(whole):
    state = load_file(str(whole[0] / "out" / "flux.safetensors"))
    for prefix in ("lora_unet_", "lora_te1_"):
        ups = [v for k, v in state.items() if k.startswith(prefix) and k.endswith("lora_up.weight")]
        assert ups and any(v.abs().max() > 0 for v in ups), prefix
    assert not any(k.startswith("lora_te3_") for k in state)  # T5 trains only on request (kohya's default)


def test_resume_ends_with_the_file_of_the_uninterrupted_run(whole, resumed):
    root, printed = resumed
    assert "resum" in printed.lower()
    expected = load_file(str(whole[0] / "out" / "flux.safetensors"))
    got = load_file(str(root / "out" / "flux.safetensors"))
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_file_is_kohyas_module_set_from_the_headers(whole, paths):
    from easytrain.families.flux.targets import (
        expected_lora_shapes, expected_modules, file_problems, header_shapes)
    from easytrain.model.detect import read_safetensors_header

    header = read_safetensors_header(whole[0] / "out" / "flux.safetensors")
    expected = expected_lora_shapes(expected_modules(
        header_shapes(read_safetensors_header(paths.dev)), variant="dev",
        clip_l=header_shapes(read_safetensors_header(paths.clip_l))), DIM)
    assert file_problems(header_shapes(header), expected) == []
    meta = header.metadata
    assert meta["ss_base_model_version"] == "flux1"
    assert meta["ss_network_module"] == "networks.lora_flux"
    assert meta["ss_model_type"] == "flux"
    assert meta["modelspec.architecture"] == "flux-1-dev/lora"
    assert meta["ss_network_dim"] == str(DIM) and meta["ss_network_alpha"] == "2.0"
    flux_keys = {"ss_timestep_sampling": "shift", "ss_discrete_flow_shift": "3.1582",
                 "ss_model_prediction_type": "raw", "ss_guidance_scale": "1.0", "ss_apply_t5_attn_mask": "False",
                 "ss_weighting_scheme": "none"}
    assert {key: meta.get(key) for key in flux_keys} == flux_keys
    assert "modelspec.prediction_type" not in meta  # kohya writes none for Flux


# ---- diffusers -------------------------------------------------------------------------------


@contextlib.contextmanager
def diffusers_at_tiny_width(hidden: int):
    """diffusers 0.42's kohya Flux converter (_convert_kohya_flux_lora_to_diffusers) splits each single
    block's linear1 LoRA with the full-size widths written in (dims=[3072, 3072, 3072, 12288]). For the
    tiny model the same converter runs with the tiny widths; nothing else in it changes."""
    from diffusers.loaders import lora_conversion_utils, lora_pipeline

    source = inspect.getsource(lora_conversion_utils._convert_kohya_flux_lora_to_diffusers)
    full = "dims=[3072, 3072, 3072, 12288]"
    assert full in source
    namespace = dict(vars(lora_conversion_utils))
    exec(source.replace(full, f"dims=[{hidden}, {hidden}, {hidden}, {4 * hidden}]"), namespace)
    with mock.patch.object(lora_pipeline, "_convert_kohya_flux_lora_to_diffusers",
                           namespace["_convert_kohya_flux_lora_to_diffusers"]):
        yield


@contextlib.contextmanager
def diffusers_log():
    """What diffusers and peft log while a LoRA loads (their unexpected / unloaded key warnings)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    loggers = [logging.getLogger(name) for name in ("diffusers", "peft")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)


def _render(pipe, **extra):
    generator = torch.Generator().manual_seed(0)
    return pipe("colours, red square", num_inference_steps=2, height=64, width=64, generator=generator,
                output_type="np", max_sequence_length=32, **extra).images


def test_flux_lora_loads_into_diffusers_flux_pipeline_and_changes_the_output(whole, paths):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(str(paths.dev_diffusers), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    before = _render(pipe)
    with diffusers_at_tiny_width(pipe.transformer.config.num_attention_heads
                                 * pipe.transformer.config.attention_head_dim), diffusers_log() as log:
        pipe.load_lora_weights(str(whole[0] / "out" / "flux.safetensors"))
    text = log.getvalue()
    assert "nexpected" not in text and "not loaded" not in text and "Unsupported" not in text, text
    assert set(pipe.get_list_adapters()) == {"transformer", "text_encoder"}
    after = _render(pipe)
    assert abs(after - before).max() > 1e-4
