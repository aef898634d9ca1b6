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
    assert meta["ss_clip_skip"] == meta["ss_max_token_length"] == "None"  # not used by Flux, as kohya writes


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
    assert "nexpected key" not in text and "not loaded" not in text and "Unsupported" not in text, text
    assert set(pipe.get_list_adapters()) == {"transformer", "text_encoder"}
    after = _render(pipe)
    assert abs(after - before).max() > 1e-4


# ---- Chroma ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chroma(tmp_path_factory, paths):
    """Chroma through the CLI: T5 is its only text encoder, and train_parts both trains it."""
    root = tmp_path_factory.mktemp("chroma")
    answers = flux_answers(root, paths.chroma, sample_images=False, validation_split=0.0, save_state=False,
                           epochs=1)
    code, printed = cli_train(str(answers))
    assert code == 0, printed
    return root / "out" / "flux.safetensors"


def test_chroma_trains_and_its_t5_keys_are_the_ones_comfyui_applies(chroma, paths):
    from easytrain.families.flux.targets import expected_lora_shapes, expected_modules, file_problems, header_shapes
    from easytrain.model.detect import read_safetensors_header
    from tests.test_flux_targets import _comfy_key_map

    header = read_safetensors_header(chroma)
    transformer = header_shapes(read_safetensors_header(paths.chroma))
    t5 = header_shapes(read_safetensors_header(paths.t5xxl))
    expected = expected_lora_shapes(expected_modules(transformer, variant="chroma", t5=t5), DIM)
    assert file_problems(header_shapes(header), expected) == []
    names = {key.split(".", 1)[0] for key in header.tensors}
    assert any(n.startswith("lora_te1_encoder_block_") for n in names)
    assert not any(n.startswith(("lora_te3_", "lora_te1_text_model_")) for n in names)
    assert not any("mod_lin" in n or "modulation" in n for n in names)  # Chroma has no modulation layers
    # ComfyUI's rules for a Chroma checkpoint (T5 only): every module finds its weight, shapes agree
    unet_keys = {"diffusion_model." + k: v for k, v in transformer.items()}
    clip_keys = {"t5xxl.transformer." + k: v for k, v in t5.items()}
    key_map = _comfy_key_map(unet_keys, clip_keys)
    shapes = {**unet_keys, **clip_keys}
    for name in names:
        assert name in key_map, name
        assert (expected[f"{name}.lora_up.weight"][0], expected[f"{name}.lora_down.weight"][1]) == \
            tuple(shapes[key_map[name]])
    state = load_file(str(chroma))
    for prefix in ("lora_unet_", "lora_te1_"):
        assert any(v.abs().max() > 0 for k, v in state.items() if k.startswith(prefix) and "lora_up" in k), prefix
    meta = header.metadata
    assert meta["ss_base_model_version"] == "chroma" and meta["modelspec.architecture"] == "chroma/lora"
    assert meta["ss_apply_t5_attn_mask"] == "True"


def test_chroma_transformer_lora_loads_into_diffusers_chroma_pipeline(chroma, paths):
    """diffusers' ChromaPipeline reads a kohya Flux file with its Flux converter, which takes ``lora_te1_`` for
    CLIP-L: the T5 keys written under ``lora_te1_`` (as ComfyUI applies them to Chroma) are not T5 to it. So the
    transformer's modules are loaded through diffusers and must change the output; the T5 keys are checked
    against ComfyUI's rules above (the client that applies them)."""
    from diffusers import ChromaPipeline

    pipe = ChromaPipeline.from_pretrained(str(paths.chroma_diffusers), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    before = _render(pipe)
    transformer_only = {k: v for k, v in load_file(str(chroma)).items() if k.startswith("lora_unet_")}
    with diffusers_at_tiny_width(pipe.transformer.config.num_attention_heads
                                 * pipe.transformer.config.attention_head_dim), diffusers_log() as log:
        pipe.load_lora_weights(transformer_only)
    text = log.getvalue()
    assert "nexpected key" not in text and "not loaded" not in text and "Unsupported" not in text, text
    after = _render(pipe)
    assert abs(after - before).max() > 1e-4


# ---- block swap and fp8 storage in the loop -----------------------------------------------------


def _loop_run(root: Path, base_model: Path, **overrides):
    answers = flux_answers(root, base_model, **{**dict(sample_images=False, validation_split=0.0,
                                                       save_state=False, save_every_n_epochs=0), **overrides})
    events = Recorder()
    result = run_training(plan_of(answers), events)
    assert isinstance(result.outcome, ev.RunFinished)
    return [e.loss for e in events.of(ev.StepEnded)], load_file(str(result.final_path))


def test_block_swap_in_the_loop_gives_the_same_losses_and_file_bit_for_bit(tmp_path, paths, monkeypatch):
    """The CPU stands in for both sides: Flux.to_device swaps only where swapping saves GPU memory, so the
    test makes it swap on the CPU, and every swapped block is moved in and out (real copies) for its turn.

    The transformer trains alone (the Flux default): with CLIP-L training too, the pooled vector's gradient is
    the sum of every block's, and a swapped block adds its part in another order (rounding-level differences);
    test_block_swap_with_clip_l_training_matches_to_rounding covers that case."""
    from easytrain.families.flux import block_swap, family

    deeper = _deeper_transformer(tmp_path / "deeper", paths.dev)
    plain_losses, plain_file = _loop_run(tmp_path / "plain", deeper, gradient_checkpointing=True,
                                         train_parts="unet_only")
    monkeypatch.setattr(family, "swaps_blocks_on", lambda device: True)
    installed = []
    real_enable = block_swap.enable_block_swap

    def spy(model, blocks, device, *args, **kwargs):
        log = []
        installed.append((blocks, log))
        return real_enable(model, blocks, device, *args, log=log, **kwargs)

    monkeypatch.setattr(block_swap, "enable_block_swap", spy)
    swap_losses, swap_file = _loop_run(tmp_path / "swap", deeper, gradient_checkpointing=True, blocks_to_swap=2,
                                      train_parts="unet_only")
    assert [blocks for blocks, _ in installed] == [2]
    moves = installed[0][1]
    assert {name for name, _ in moves} == {"double_blocks.3", "single_blocks.2", "single_blocks.3"}
    assert len(moves) > 3 * 4  # in and out, forward and backward, each step
    assert swap_losses == plain_losses
    assert set(swap_file) == set(plain_file)
    for key, value in plain_file.items():
        assert torch.equal(swap_file[key], value), key


def test_block_swap_with_clip_l_training_matches_to_rounding(tmp_path, paths, monkeypatch):
    from easytrain.families.flux import family

    deeper = _deeper_transformer(tmp_path / "deeper", paths.dev)
    plain_losses, plain_file = _loop_run(tmp_path / "plain", deeper, gradient_checkpointing=True)
    monkeypatch.setattr(family, "swaps_blocks_on", lambda device: True)
    swap_losses, swap_file = _loop_run(tmp_path / "swap", deeper, gradient_checkpointing=True, blocks_to_swap=2)
    assert swap_losses == pytest.approx(plain_losses, rel=1e-5)
    for key, value in plain_file.items():
        torch.testing.assert_close(swap_file[key], value, rtol=1e-4, atol=1e-6, msg=key)


def _tree_beside(folder: Path, source: Path) -> Path:
    """A ComfyUI models/ tree under ``folder`` with links to the tiny companions; its diffusion_models folder."""
    models = folder / "models"
    for part in ("text_encoders", "vae"):
        (models / part).mkdir(parents=True)
        for file in (source.parents[1] / part).iterdir():
            (models / part / file.name).symlink_to(file)
    (models / "diffusion_models").mkdir()
    return models / "diffusion_models"


def _deeper_transformer(folder: Path, source: Path) -> Path:
    """The tiny Flux-dev with 4 double and 4 single blocks: the tiny one's 2 + 2 leave none to swap (two of
    each kind stay on the GPU)."""
    import dataclasses

    from easytrain.families.flux import tiny
    from easytrain.families.flux.detect import FLUX_DEV

    small = tiny.tiny_config
    with mock.patch.object(tiny, "tiny_config",
                           lambda kind=FLUX_DEV: dataclasses.replace(small(kind), depth=4, depth_single_blocks=4)):
        model = tiny.build_tiny_transformer(FLUX_DEV)
    return tiny.write_bfl_transformer(model, _tree_beside(folder, source) / source.name,
                                      {"easytrain.model": tiny.MARKERS[FLUX_DEV]})


def _prerounded_transformer(folder: Path, source: Path) -> Path:
    """A copy of the tiny transformer whose block Linears' weights were rounded to fp8 beforehand, in a
    ComfyUI tree beside links to the same companions."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from easytrain.families.flux.fp8 import round_to_fp8

    target = _tree_beside(folder, source) / source.name
    with safe_open(str(source), "pt") as fh:
        metadata = fh.metadata()
        state = {key: fh.get_tensor(key) for key in fh.keys()}
    rounded = 0
    for key, value in state.items():
        if key.startswith(("double_blocks.", "single_blocks.")) and key.endswith(".weight") and value.dim() == 2:
            state[key] = round_to_fp8(value.to(torch.bfloat16)).to(value.dtype)  # as the fp8 run: bf16, then fp8
            rounded += 1
    assert rounded > 0
    save_file(state, str(target), metadata=metadata)
    return target


def test_fp8_base_gives_the_first_loss_of_weights_rounded_to_fp8_beforehand(tmp_path, paths):
    from easytrain.families.flux.family import Flux
    from easytrain.families.flux.fp8 import FP8

    rounded = _prerounded_transformer(tmp_path / "rounded", paths.dev)
    settings = dict(mixed_precision="bf16", epochs=1, train_parts="unet_only")
    placed = Flux.to_device
    stored = []

    def spy(self, base, device):
        result = placed(self, base, device)
        stored.append({p.dtype for name, p in base.unet.named_parameters()
                       if name.startswith("double_blocks.") and name.endswith("qkv.base_layer.weight")})
        return result

    with mock.patch.object(Flux, "to_device", spy):
        fp8_losses, _ = _loop_run(tmp_path / "fp8", paths.dev, fp8_base=True, **settings)
    assert stored == [{FP8}]  # stored in fp8 while it trains (not cast back to the mixed precision)
    rounded_losses, _ = _loop_run(tmp_path / "pre", rounded, fp8_base=False, **settings)
    plain_losses, _ = _loop_run(tmp_path / "plain", paths.dev, fp8_base=False, **settings)
    assert fp8_losses[0] == rounded_losses[0]
    assert plain_losses[0] != fp8_losses[0]  # the rounding is seen: the comparison is not vacuous
