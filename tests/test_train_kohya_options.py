"""kohya's further settings, trained end to end on the tiny model: each option on, its effect asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from _train_helpers import Recorder, tiny_plan
from easytrain.train import events as ev
from easytrain.train.control import TrainControl
from easytrain.train.loop import run_training


def read(path):
    with safe_open(str(path), "pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()


# ---------------------------------------------------------------- accumulation equals a large batch

def test_accumulated_batches_make_the_large_batch_step_in_fp32():
    """Two batches of 1 with accumulation 2 give the weights one batch of 2 gives, on the tiny model in fp32."""
    from accelerate import Accelerator

    from easytrain.data.dataset import Batch
    from easytrain.families.sd.targets import apply_network
    from easytrain.network.spec import NetworkSpec
    from easytrain.settings import LossSettings
    from easytrain.families.ddpm.diffusion import diffusion_loss, sample_noise, sample_timesteps, training_target
    from easytrain.train.step import TrainingStep
    from tests._network_helpers import tiny_parts

    loss_settings = LossSettings(
        min_snr_gamma=5.0, noise_offset=0.0, adaptive_noise_scale=0.0, multires_noise_iterations=0,
        multires_noise_discount=0.3, ip_noise_gamma=0.0, zero_terminal_snr=False, v_parameterization=False,
        scale_v_pred_loss_like_noise_pred=False, debiased_estimation_loss=False, loss_type="l2",
        huber_schedule="snr", huber_c=0.1, huber_scale=1.0, masked=False)
    gen = torch.Generator().manual_seed(0)
    latents = [torch.randn(1, 4, 8, 8, generator=gen) for _ in range(2)]
    context = [torch.randn(1, 9, 32, generator=gen) for _ in range(2)]

    def setup():
        parts = tiny_parts()
        network = apply_network(parts["unet"], None, NetworkSpec("LoRA", dim=4, alpha=4.0,
                                                                 train_text_encoder=False), seed=0)
        with torch.no_grad():
            for p in network.trainable_parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        optimizer = torch.optim.SGD(network.trainable_parameters(), lr=0.5)
        return parts, network, optimizer

    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False)
    # accumulated: the production step, 2 batches of 1
    parts, network, optimizer = setup()
    noise_rng = torch.Generator().manual_seed(42)
    contexts = iter(context)
    from easytrain.families.ddpm.objective import DdpmObjective

    objective = DdpmObjective(scheduler, "epsilon", loss_settings, scaling_factor=1.0, device=torch.device("cpu"))
    step = TrainingStep(
        accelerator=Accelerator(cpu=True), conditioner=lambda batch: {"encoder_hidden_states": next(contexts)},
        encode_latents=None, objective=objective, noise_rng=noise_rng, optimizer=optimizer,
        lr_scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
        trainable=network.trainable_parameters(), max_grad_norm=0.0, accumulation=2)
    for lat in latents:
        step.backward(Batch(None, lat, ["x"], torch.ones(1)), parts["unet"])
    step.apply()
    accumulated = [p.detach().clone() for p in network.trainable_parameters()]

    # the large batch, by hand, with the same draws (the step's order: noise, then timesteps, per batch)
    parts, network, optimizer = setup()
    replay = torch.Generator().manual_seed(42)
    noises, steps = [], []
    for lat in latents:
        noises.append(sample_noise(lat, 0.0, replay))
        steps.append(sample_timesteps(1, 1000, "cpu", replay))
    lat, noise, t = torch.cat(latents), torch.cat(noises), torch.cat(steps)
    pred = parts["unet"](scheduler.add_noise(lat, noise, t), t, torch.cat(context)).sample
    from easytrain.families.ddpm.diffusion import all_snr

    loss = diffusion_loss(pred, training_target(scheduler, lat, noise, t, "epsilon"), t,
                          loss_weights=torch.ones(2), snr=all_snr(scheduler), min_snr_gamma=5.0)
    loss.backward()
    optimizer.step()
    large = [p.detach() for p in network.trainable_parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(accumulated, [p for p in setup()[1].trainable_parameters()]))
    for a, b in zip(accumulated, large):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- a run with many options on

def masked_dataset(root):
    """Four images whose right half is transparent (alpha masks), in root/masked/1_shapes."""
    folder = root / "masked" / "1_shapes"
    folder.mkdir(parents=True)
    for i, rgb in enumerate([(220, 30, 30), (30, 200, 60), (30, 60, 220), (230, 210, 30)]):
        array = np.zeros((64, 64, 4), np.uint8)
        array[..., :3] = rgb
        array[:, :32, 3] = 255
        Image.fromarray(array, "RGBA").save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"shapes, colour {i}, square, plain", encoding="utf-8")
    return root / "masked"


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("combined")
    images = masked_dataset(tmp)
    plan = tiny_plan(
        tmp, image_folder=str(images), batch_size=1, gradient_accumulation_steps=3, epochs=1,
        alpha_mask=True, caption_dropout_rate=0.3, caption_tag_dropout_rate=0.3, keep_tokens=1,
        shuffle_captions=True, multires_noise_iterations=4, noise_offset=0.05, adaptive_noise_scale=0.01,
        ip_noise_gamma=0.1, loss_type="huber", huber_schedule="snr", network_type="LoCon", conv_dim=2,
        conv_alpha=1.0, dora=True, up_lr_weight="1,1,1,0.5", block_dims=",".join(["4"] * 12 + ["0"] + ["4"] * 12),
        ema=True, ema_decay=0.9, save_precision="float", save_state=True, random_crop=True)
    events = Recorder()
    result = run_training(plan, events)
    return plan, events, result


def test_accumulation_counts_optimizer_steps(combined):
    plan, events, result = combined
    # 4 batches of 1 per epoch -> windows of 3 and 1 -> 2 optimizer steps an epoch
    assert plan.steps_per_epoch == 2 and plan.total_steps == 2 and result.steps == 2
    assert [e.step for e in events.of(ev.StepEnded)] == [1, 2]
    assert [e.images for e in events.of(ev.StepEnded)] == [3, 1]
    assert "batch 1 x 3 accumulated" in plan.steps.line()


def test_files_metadata_dora_blocks_and_ema(combined):
    plan, events, result = combined
    out = plan.saving.output_dir
    final, meta = read(result.final_path)
    ema, ema_meta = read(out / "tiny-ema.safetensors")
    assert any(k.endswith(".dora_scale") for k in final)
    assert not any("mid_block_attentions" in k for k in final)            # block dim 0: left out
    assert any("mid_block_resnets" in k for k in final)                   # (its 3x3 convs take the conv dim)
    assert set(final) == set(ema) and any(not torch.equal(final[k], ema[k]) for k in final)
    assert meta["ss_gradient_accumulation_steps"] == "3" and meta["ss_total_batch_size"] == "3"
    assert meta["ss_loss_type"] == "huber" and meta["ss_multires_noise_iterations"] == "4"
    assert meta["ss_random_crop"] == "True" and meta["ss_caption_dropout_rate"] == "0.3"
    assert json.loads(meta["ss_network_args"])["dora_wd"] == "True"
    assert json.loads(meta["ss_network_args"])["up_lr_weight"] == "1,1,1,0.5"
    assert "ss_session_id" in meta and "ss_training_finished_at" in meta and "ss_bucket_info" in meta
    assert ema_meta["ss_output_name"] == "tiny-ema"
    assert "latents are not cached" in " ".join(e.text for e in events.of(ev.Message))


def test_resume_inside_a_run_with_accumulation_is_exact(combined, tmp_path):
    """A run stopped after step 1 (mid epoch, after a full window) and resumed ends as the uninterrupted run."""
    plan, _, whole = combined
    images = plan.train_scan.root
    again = tiny_plan(
        tmp_path, image_folder=str(images), batch_size=1, gradient_accumulation_steps=3, epochs=1,
        alpha_mask=True, caption_dropout_rate=0.3, caption_tag_dropout_rate=0.3, keep_tokens=1,
        shuffle_captions=True, multires_noise_iterations=4, noise_offset=0.05, adaptive_noise_scale=0.01,
        ip_noise_gamma=0.1, loss_type="huber", huber_schedule="snr", network_type="LoCon", conv_dim=2,
        conv_alpha=1.0, dora=True, up_lr_weight="1,1,1,0.5", block_dims=",".join(["4"] * 12 + ["0"] + ["4"] * 12),
        ema=True, ema_decay=0.9, save_precision="float", save_state=True, random_crop=True)
    control = TrainControl()
    events = Recorder()

    def sink(event):
        events(event)
        if isinstance(event, ev.StepEnded) and event.step == 1:
            control.request_stop("test stop")

    stopped = run_training(again, sink, control)
    assert stopped.steps == 1
    assert (again.saving.output_dir / "tiny-step00000001-ema.safetensors").is_file()
    resumed = run_training(again, Recorder(), resume="latest")
    assert resumed.steps == 2
    for name in ("tiny.safetensors", "tiny-ema.safetensors"):
        a, b = load_file(plan.saving.output_dir / name), load_file(again.saving.output_dir / name)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), name


def test_masked_loss_ignores_what_is_outside_the_mask(tmp_path):
    """With an all-black mask file the loss is zero: nothing trains; without masks the same run trains."""
    images = masked_dataset(tmp_path)
    masks = tmp_path / "masks" / "1_shapes"
    masks.mkdir(parents=True)
    for i in range(4):
        Image.new("L", (64, 64), 0).save(masks / f"img{i}.png")
    plan = tiny_plan(tmp_path, image_folder=str(images), mask_folder=str(tmp_path / "masks"), epochs=1,
                     save_precision="float", text_encoder_lr=0.0, save_every_n_epochs=0,
                     # the v target and SNR weights on a zero-terminal-SNR schedule: still finite (0 x inf is NaN)
                     zero_terminal_snr=True, v_parameterization=True, debiased_estimation_loss=True,
                     scale_v_pred_loss_like_noise_pred=True, min_snr_gamma=5.0)
    assert plan.train_scan.masked_images == 4
    events = Recorder()
    run_training(plan, events)
    assert all(e.loss == 0.0 for e in events.of(ev.StepEnded))
    weights, meta = read(plan.saving.output_dir / "tiny.safetensors")
    assert all(weights[k].abs().sum() == 0 for k in weights if k.endswith("lora_up.weight"))
    assert meta["modelspec.prediction_type"] == "v" and meta["ss_zero_terminal_snr"] == "True"
    assert meta["ss_debiased_estimation"] == "True"


def test_caption_dropout_rate_is_measured_on_the_trained_captions(tmp_path):
    """The captions the run encodes: about the asked share is empty, the kept tag always leads the rest."""
    from easytrain.data.dataset import TrainDataset

    plan = tiny_plan(tmp_path, caption_dropout_rate=0.25, caption_tag_dropout_rate=0.5, keep_tokens=1, epochs=1)
    dataset = TrainDataset(plan.train_scan, plan.reg_scan, plan.bucket_settings, keep_tokens=1,
                           caption_dropout_rate=plan.data.caption_dropout_rate,
                           caption_tag_dropout_rate=plan.data.caption_tag_dropout_rate, seed=plan.run.seed)
    captions = [c for epoch in range(1, 201) for spec in dataset.epoch_batches(epoch, 2)
                for c in dataset.captions_for(spec, epoch)]
    share = captions.count("") / len(captions)
    assert 0.2 < share < 0.3
    assert all(c.split(", ")[0] == "colours" for c in captions if c)
