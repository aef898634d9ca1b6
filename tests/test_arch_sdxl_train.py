"""SDXL end to end on the CPU: the tiny SDXL single file trains a LoRA in kohya's SDXL format,
and diffusers' SDXL pipeline loads it with every key consumed and changes its output."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from easytrain.families.sdxl.tiny import tiny_sdxl_paths

from _train_helpers import Recorder, tiny_plan


def _train(tmp_path, **overrides):
    from easytrain.train.loop import run_training

    plan = tiny_plan(tmp_path, base_model=str(tiny_sdxl_paths().single_file), architecture="sdxl",
                     epochs=1, **overrides)
    return plan, run_training(plan, Recorder())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """UNet and both text encoders trained (LoRA), one epoch, a sample image at its end."""
    tmp = tmp_path_factory.mktemp("sdxl")
    prompts = tmp / "prompts.txt"
    prompts.write_text("a red square --n green --s 2 --w 64 --h 64 --d 3\n", encoding="utf-8")
    return _train(tmp, train_parts="both", sample_images=True, sample_prompts=str(prompts), sample_every_n_epochs=1)


def test_samples_come_from_the_sdxl_pipeline(trained):
    from PIL import Image

    plan, _result = trained
    folder = plan.saving.output_dir / "sample"
    assert sorted(p.name for p in folder.iterdir()) == ["tiny_e000001_00_3.png", "tiny_e000001_sheet.png"]
    with Image.open(folder / "tiny_e000001_00_3.png") as image:
        assert image.size == (64, 64)
        assert "Negative prompt: green" in image.info["parameters"]


def test_lora_in_kohyas_sdxl_format(trained):
    _plan, result = trained
    with safe_open(str(result.final_path), framework="pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
    modules = {k.split(".")[0] for k in keys}
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in modules
    assert "lora_unet_middle_block_1_proj_in" in modules
    assert any(m.startswith("lora_unet_output_blocks_0_1_") for m in modules)
    assert any(m.startswith("lora_te1_text_model_encoder_layers_") for m in modules)
    assert any(m.startswith("lora_te2_text_model_encoder_layers_") for m in modules)
    assert not any(m.startswith(("lora_unet_down_blocks", "lora_te_")) for m in modules)
    assert all(f"{m}.alpha" in keys for m in modules)
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"


def test_diffusers_sdxl_pipeline_loads_every_key(trained):
    from diffusers import StableDiffusionXLPipeline

    _plan, result = trained
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_paths().diffusers_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def image():
        return pipe("a red square", num_inference_steps=2, height=64, width=64, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images

    before = image()
    with safe_open(str(result.final_path), framework="pt") as handle:
        file_modules = {k.split(".")[0] for k in handle.keys()}
    pipe.load_lora_weights(str(result.final_path))
    adapted = {part: _adapted_layers(getattr(pipe, part)) for part in ("unet", "text_encoder", "text_encoder_2")}
    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    for part, prefix in prefixes.items():  # every module of the file went into a layer
        assert adapted[part] == sum(m.startswith(prefix) for m in file_modules), part
    after = image()
    assert not torch.allclose(before, after)


def _adapted_layers(model) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for m in model.modules())


def _noobai_file(tmp_path):
    """The tiny SDXL file with NoobAI's empty v_pred and ztsnr keys (tiny marker kept)."""
    from safetensors.torch import load_file, save_file

    source = tiny_sdxl_paths().single_file
    state = load_file(str(source)) | {"v_pred": torch.zeros(0), "ztsnr": torch.zeros(0)}
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
    path = tmp_path / "noob-vpred.safetensors"
    save_file(state, str(path), metadata=metadata)
    return path


def test_noobai_v_pred_loads_with_v_target_and_zero_terminal_snr(tmp_path):
    from easytrain.families.load import load_base_model

    path = _noobai_file(tmp_path)
    base = load_base_model(str(path))
    assert (base.arch, base.prediction_type) == ("sdxl-v", "v_prediction")
    assert base.noise_scheduler.config.prediction_type == "v_prediction"
    assert base.noise_scheduler.alphas_cumprod[-1] < 1e-6
    answered = load_base_model(str(tiny_sdxl_paths().single_file), "sdxl-v")
    assert answered.prediction_type == "v_prediction" and answered.noise_scheduler.alphas_cumprod[-1] > 1e-3


def test_noobai_v_pred_trains_and_is_marked_v(tmp_path):
    from easytrain.train.loop import run_training

    plan = tiny_plan(tmp_path, base_model=str(_noobai_file(tmp_path)), architecture="auto", epochs=1)
    result = run_training(plan, Recorder())
    with safe_open(str(result.final_path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["modelspec.prediction_type"] == "v"
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert metadata["ss_zero_terminal_snr"] == "True"  # the file's ztsnr marker, though not asked for
    # "auto" still gets SDXL's defaults from the header: UNet only, buckets 512-2048
    assert plan.model.architecture == "sdxl-v" and not plan.network.train_text_encoder   # resolved once, in the plan
    assert (plan.bucket_settings.min_reso, plan.bucket_settings.max_reso) == (512, 2048)
    assert result.average_loss is not None and result.average_loss == result.average_loss  # not NaN


def test_frozen_text_encoders_are_used_only_before_the_first_step_and_for_samples(tmp_path, monkeypatch):
    """UNet only with fixed captions (SDXL's defaults): every caption, held-out ones included, is encoded
    once before training, so the text encoders can wait on the CPU; only sampling brings them back."""
    from easytrain.families.sdxl import text as sdxl_text
    from easytrain.train import events as ev

    recorder = Recorder()
    real_encode = sdxl_text.encode_sdxl_tokens

    def encode(*args, **kwargs):
        recorder.append("encoded")
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(sdxl_text, "encode_sdxl_tokens", encode)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square --w 64 --h 64 --s 2\n", encoding="utf-8")
    from easytrain.train.loop import run_training

    plan = tiny_plan(tmp_path, base_model=str(tiny_sdxl_paths().single_file), architecture="sdxl", epochs=2,
                     validation_split=0.25, sample_images=True, sample_prompts=str(prompts),
                     sample_every_n_epochs=1)
    assert not plan.network.train_text_encoder and not plan.data.shuffle_captions  # SDXL's defaults
    run_training(plan, recorder)
    steps_seen, sampling, late = 0, False, []
    for event in recorder:
        if isinstance(event, ev.StepEnded):
            steps_seen += 1
        elif isinstance(event, (ev.PhaseStarted, ev.PhaseEnded)) and event.phase == "sampling":
            sampling = isinstance(event, ev.PhaseStarted)
        elif event == "encoded" and steps_seen and not sampling:
            late.append(steps_seen)
    assert "caching text encoder outputs" in [e.phase for e in recorder.of(ev.PhaseStarted)]
    assert recorder.count("encoded") >= 3 and not late
    assert len(recorder.of(ev.ValidationDone)) == 2 and len(recorder.of(ev.SampleSaved)) == 2


def test_loha_trains_on_sdxl_end_to_end(tmp_path):
    plan, result = _train(tmp_path, train_parts="both", network_type="LoHa", network_dim=4, network_alpha=2.0)
    with safe_open(str(result.final_path), framework="pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
    assert metadata["ss_network_module"] == "lycoris.kohya" and metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    for prefix in ("lora_unet_input_blocks_", "lora_unet_output_blocks_", "lora_te1_", "lora_te2_"):
        assert any(k.startswith(prefix) and k.endswith(".hada_w1_a") for k in keys), prefix
    assert result.average_loss == result.average_loss  # not NaN
