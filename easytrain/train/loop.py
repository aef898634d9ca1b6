"""The training loop: one plan in, LoRA files and events out.

It reads top to bottom in the phase order of diffusers'
train_text_to_image_lora.py: accelerator, output folder, base model (frozen,
in the mixed precision), network (fp32 adapters), dataset and latent cache,
optimizer and scheduler, prepare, epochs of steps with saves, final save.
Every setting comes from the plan's records; what differs per architecture
comes from its adapter (arch/). The only way in from outside is the control
object, polled between steps.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from easytrain.errors import UserError
from easytrain.train import events as ev
from easytrain.train import setup
from easytrain.train import state as tr_state
from easytrain.train.accumulation import window_ends
from easytrain.train.checkpoints import Checkpointer, Position, existing_lora, resume_state
from easytrain.train.control import TrainControl
from easytrain.train.memory_peaks import PeakMemory, run_estimate
from easytrain.train.optimizers import build_optimizer, effective_lrs
from easytrain.train.prefetch import BatchLoader
from easytrain.train.samples import SampleMaker, no_samples, sample_prompts
from easytrain.train.saving import epoch_file, final_file, run_metadata, step_file
from easytrain.train.schedulers import build_scheduler
from easytrain.train.step import TrainingStep, VaeEncoder
from easytrain.train.validation import build_validator

log = logging.getLogger(__name__)

NAN_ADVICE = ("use bf16 instead of fp16 mixed precision (mixed_precision: bf16), lower the learning rate, "
              "and keep the VAE in fp32 (cache_latents: memory or disk encodes with an fp32 VAE)")
OOM_ADVICE = ("lower the batch size or the resolution, turn gradient checkpointing on, cache latents "
              "(cache_latents: memory or disk), or use an 8-bit optimizer (AdamW8bit)")


@dataclass(frozen=True)
class RunResult:
    final_path: Optional[Path]          # name.safetensors; the last saved file for a stopped run
    files: tuple[Path, ...]             # every file written into the output folder
    steps: int
    seconds: float
    average_loss: Optional[float]       # over the last epoch trained
    outcome: ev.Event                   # the RunFinished or RunStopped event that ended the run


class TrainingFailed(UserError):
    """The run stopped itself (NaN loss, out of memory); RunFailed was emitted."""


def run_training(plan, sink: ev.Sink, control: Optional[TrainControl] = None, *,
                 resume: Optional[str] = None) -> RunResult:
    """Train the network described by ``plan``; write its files into plan.output_dir.

    ``resume`` is "latest" (the newest state in the output folder) or a state
    folder; the run then continues from that state's step.
    """
    control = control or TrainControl()
    emit = _guarded(sink)
    started = time.monotonic()
    network_settings, data = plan.network, plan.data
    seed = plan.run.seed

    # ---- accelerator and precision -------------------------------------------------------------
    # With clip skip (SD1/SD2) or penultimate-layer conditioning (SDXL), a text encoder's last layers feed
    # nothing: DDP must expect adapters without grads whenever text encoders train.
    unused_parameters = network_settings.train_text_encoder
    accelerator, mixed_precision = setup.make_accelerator(plan.precision.mixed_precision, emit, unused_parameters)
    device = accelerator.device
    peaks = PeakMemory(device)      # the steps' peak GPU memory apart from loading, caching and sampling
    weight_dtype = setup.DTYPES[mixed_precision]
    from accelerate.utils import set_seed

    set_seed(seed)
    is_main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    run_fingerprint = tr_state.fingerprint(plan, world)
    resumed = resume_state(plan, resume, run_fingerprint) if resume else None
    run_id = resumed.info.get("run_id") if resumed else uuid.uuid4().hex
    from easytrain.run_files import write_run_files

    files: list[Path] = write_run_files(plan) if is_main else []

    # ---- base model, frozen, in the mixed precision, and its architecture's adapter ----------------
    emit(ev.PhaseStarted("loading model"))
    phase_start = time.monotonic()
    from easytrain.arch.registry import adapter_for
    from easytrain.model.load import load_base_model

    base = load_base_model(plan.model.base_model, plan.model.architecture, dtype=weight_dtype)
    if plan.model.vae is not None:  # kohya's --vae: latents and samples through another VAE
        from easytrain.model.vae_file import load_vae

        base.vae = load_vae(plan.model.vae, base.vae.config, dtype=weight_dtype)
    adapter = adapter_for(base.arch)
    prediction_type = plan.loss.prediction_type(base.prediction_type)
    # asked for, or the file is marked so (NoobAI's ztsnr key: its loader rescaled the schedule already)
    zero_terminal_snr = plan.loss.zero_terminal_snr or bool(base.noise_scheduler.config.get("rescale_betas_zero_snr"))
    if plan.loss.zero_terminal_snr:
        from easytrain.train.noise_variants import rescale_for_zero_terminal_snr

        rescale_for_zero_terminal_snr(base.noise_scheduler)
    unet, vae = base.unet, base.vae
    for frozen in (unet, vae, *base.text_encoders):
        frozen.requires_grad_(False)
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())      # PyTorch SDPA (flash / memory-efficient kernels)
    emit(ev.PhaseEnded("loading model", time.monotonic() - phase_start))

    # ---- network: adapters in fp32 on the frozen weights ------------------------------------------
    from easytrain.network.build import build_network

    spec = network_settings.spec()
    models = adapter.network_models(base)
    network = build_network(models, adapter.network_targets(models, spec), spec, seed=seed)
    if network_settings.initial_weights is not None and resumed is None:
        from easytrain.network.load import load_lora_into

        report = load_lora_into(network, network_settings.initial_weights)
        emit(ev.Message(f"continuing from {network_settings.initial_weights}: "
                        f"{report.modules_loaded} modules loaded"))
    network.cast_base(weight_dtype)
    text_encoders = list(base.text_encoders)
    if plan.precision.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if network_settings.train_text_encoder:
            for text_encoder in text_encoders:
                setup.checkpoint_text_encoder(text_encoder)
    unet.train(network_settings.train_unet)
    for text_encoder in text_encoders:
        text_encoder.train(network_settings.train_text_encoder)

    # ---- dataset, latents cached once (only the VAE on the GPU), then the VAE leaves it -----------
    from easytrain.data.dataset import TrainDataset

    dataset = TrainDataset(
        plan.train_scan, plan.reg_scan, plan.bucket_settings,
        shuffle_captions=data.shuffle_captions, keep_tokens=data.keep_tokens, flip_aug=data.flip_aug,
        prior_loss_weight=data.prior_loss_weight, seed=seed, caption_extension=data.caption_extension,
        keep_tokens_separator=data.keep_tokens_separator, caption_dropout_rate=data.caption_dropout_rate,
        caption_dropout_every_n_epochs=data.caption_dropout_every_n_epochs,
        caption_tag_dropout_rate=data.caption_tag_dropout_rate, random_crop=data.random_crop,
        color_aug=data.color_aug,
    )
    # Frozen text encoders and fixed captions: each caption is encoded once, before the first step, and the
    # encoders then leave the GPU (kohya's cache_text_encoder_outputs; about 1.6 GB on SDXL).
    cache_text = plan.text_outputs_cached
    latent_rng = torch.Generator(device=device).manual_seed(seed + 1)
    caching = data.cache_latents != "off" and not plan.pixels_vary
    if data.cache_latents != "off" and not caching:
        emit(ev.Message("latents are not cached: random crop or colour jitter change the pixels every epoch"))
    # The VAE encodes in fp32 when caching (once, exact); per step it runs in the mixed precision if it can.
    vae_dtype = torch.float32 if caching or not adapter.vae_encodes_in_half else weight_dtype
    vae.to(device, dtype=vae_dtype)
    encode_latents = VaeEncoder(vae, device=device, dtype=vae_dtype, generator=latent_rng)
    validate = build_validator(plan, adapter=adapter, base=base, unet=unet, text_encoders=text_encoders, vae=vae,
                               vae_dtype=vae_dtype, device=device, autocast=accelerator.autocast, emit=emit,
                               cache_text=cache_text)
    if caching:
        emit(ev.PhaseStarted("caching latents", len(dataset.samples)))
        peaks.phase_started()
        phase_start = time.monotonic()
        dataset.cache_latents(
            encode_latents, data.cache_latents, batch_size=setup.vae_batch_size(plan.resolution, data.batch_size),
            on_progress=lambda done, total: emit(ev.PhaseProgress("caching latents", done, total)),
            cache_key=f"{base.source}|{base.arch}" + (f"|vae={plan.model.vae}" if plan.model.vae else ""),
        )
        emit(ev.PhaseEnded("caching latents", time.monotonic() - phase_start, peaks.phase_ended("caching latents")))
        vae.to("cpu")
        setup.empty_device_cache(device)
    unet.to(device)
    for text_encoder in text_encoders:
        text_encoder.to(device)

    # ---- optimizer and learning-rate schedule ----------------------------------------------------
    groups = network.parameter_groups(plan.optimizer.unet_lr, plan.optimizer.text_encoder_lr)
    built = build_optimizer(plan.optimizer.name, groups, args=dict(plan.optimizer.args), device=device)
    for note in built.notes:
        emit(ev.Message(note, "warning"))
    # kohya's convention: the step count is per process (each process takes its share of an epoch).
    steps_per_epoch = math.ceil(plan.steps_per_epoch / world)
    total_steps = plan.total_steps if world == 1 else math.ceil(plan.total_steps / world)
    schedule = plan.schedule
    lr_scheduler = build_scheduler(built.optimizer, schedule.scheduler, total_steps=total_steps,
                                   warmup_steps=schedule.warmup_steps // world, restarts=schedule.restarts,
                                   power=schedule.power)

    # ---- prepare (DDP, autocast) -------------------------------------------------------------------
    trained = [unet] if network_settings.train_unet else []
    trained += text_encoders if network_settings.train_text_encoder else []
    prepared = list(accelerator.prepare(*trained, built.optimizer))
    optimizer = prepared.pop()
    if network_settings.train_unet:
        unet = prepared.pop(0)
    if network_settings.train_text_encoder:
        text_encoders = prepared
    unet_forward = setup.compiled(unet, emit) if plan.precision.torch_compile else unet
    compile_pending = unet_forward is not unet

    noise_rng = torch.Generator(device=device).manual_seed(seed + 2 + rank)
    conditioner = adapter.conditioner(
        text_encoders, base.tokenizers, clip_skip=plan.model.clip_skip, max_token_length=plan.model.max_token_length,
        device=device, train_text_encoder=network_settings.train_text_encoder, cache_text=cache_text)
    text_home = torch.device("cpu") if cache_text else device
    if cache_text:
        emit(ev.PhaseStarted("caching text encoder outputs"))
        peaks.phase_started()
        phase_start = time.monotonic()
        with accelerator.autocast():
            conditioner.precache(dataset.fixed_captions())
            validate.precache_text()
        for text_encoder in text_encoders:
            text_encoder.to(text_home)
        setup.empty_device_cache(device)
        emit(ev.PhaseEnded("caching text encoder outputs", time.monotonic() - phase_start,
                           peaks.phase_ended("caching text encoder outputs")))
    ema = None
    if plan.saving.ema_decay:
        from easytrain.train.ema import LoraEMA

        ema = LoraEMA(network.trainable_parameters(), plan.saving.ema_decay)
    accumulation = plan.optimizer.gradient_accumulation_steps
    training_step = TrainingStep(
        accelerator=accelerator, conditioner=conditioner, encode_latents=encode_latents,
        scaling_factor=float(vae.config.scaling_factor), noise_scheduler=base.noise_scheduler,
        prediction_type=prediction_type, loss=plan.loss, noise_rng=noise_rng, optimizer=optimizer,
        lr_scheduler=lr_scheduler, trainable=network.trainable_parameters(),
        max_grad_norm=plan.optimizer.max_grad_norm, device=device, accumulation=accumulation, ema=ema)
    # .item() waits for the GPU; on the CPU it costs nothing, so sync every step there.
    sync_every = 1 if device.type == "cpu" else plan.run.log_every_n_steps
    metadata = run_metadata(plan, spec=spec, arch=base.arch, prediction_type=prediction_type,
                            zero_terminal_snr=zero_terminal_snr, processes=world,
                            optimizer_name=built.name, mixed_precision=mixed_precision, total_steps=total_steps,
                            steps_per_epoch=steps_per_epoch)
    checkpoints = Checkpointer(
        plan=plan, accelerator=accelerator, network=network, optimizer=optimizer, lr_scheduler=lr_scheduler,
        generators={"noise_rng": noise_rng, "latent_rng": latent_rng}, metadata=metadata,
        fingerprint=run_fingerprint, run_id=run_id, emit=emit, files=files, ema=ema)
    prompts = sample_prompts(plan)
    make_samples = SampleMaker(
        plan=plan, prompts=prompts, adapter=adapter, base=base, accelerator=accelerator, unet=unet,
        text_encoders=text_encoders, device=device, dtype=weight_dtype, emit=emit,
        vae_home=torch.device("cpu") if caching else device, text_home=text_home,
        peaks=peaks) if prompts else no_samples

    # ---- the epochs ----------------------------------------------------------------------------------
    position = Position()
    if resumed is not None:
        checkpoints.restore(resumed)
        position = Position.from_saved(resumed.position)
        emit(ev.Message(f"resuming from {resumed.folder} at step {position.global_step} "
                        f"(epoch {position.epoch}, batch {position.batch_index + 1})"))
    emit(ev.RunStarted(
        name=plan.output_name, total_steps=total_steps, epochs=plan.epochs, steps_per_epoch=steps_per_epoch,
        batch_size=data.batch_size, num_images=plan.images_per_epoch, device=setup.device_text(device),
        output_dir=str(plan.output_dir), start_step=position.global_step,
        lr_groups=tuple(g["name"] for g in optimizer.param_groups), validation_images=plan.validation.images,
    ))
    save_every, with_state = plan.saving.every_n_epochs, plan.saving.save_state
    sample_every = plan.sampling.every_n_epochs
    save_every_steps, sample_every_steps = plan.saving.every_n_steps, plan.sampling.every_n_steps
    last_saved: Optional[Path] = existing_lora(resumed)
    epoch_average: Optional[float] = None
    final: Optional[Path] = None
    window = LossWindow(accelerator, lambda reason: _fail(emit, position, reason, NAN_ADVICE, last_saved))
    peaks.steps_started()
    shown_loss = float("nan")

    try:
        if plan.sampling.before_training and resumed is None:
            make_samples(0)
        for epoch in range(position.epoch, plan.epochs + 1):
            position.epoch = epoch
            batches = setup.process_share(dataset.epoch_batches(epoch, data.batch_size), rank, world)
            loader = BatchLoader(dataset, batches, epoch, start=position.batch_index, device=device)
            epoch_sum = torch.full((), position.epoch_loss_sum, device=device)
            epoch_count = position.epoch_loss_count
            step_start, step_loss, step_images = time.monotonic(), None, 0
            for index in range(position.batch_index, len(batches)):
                if position.global_step >= total_steps:
                    break
                batch = loader.get(index)      # on the device: pinned, non-blocking, loaded ahead if not cached
                if compile_pending:
                    loss, unet_forward = setup.compiled_step(training_step.backward, batch, unet_forward, unet,
                                                             emit, optimizer, (noise_rng, latent_rng))
                    compile_pending = unet_forward is not unet   # a later bucket shape compiles again
                else:
                    loss = training_step.backward(batch, unet_forward)
                step_loss = loss if step_loss is None else step_loss + loss
                step_images += len(batch.captions)
                if not window_ends(index, len(batches), accumulation):
                    continue                     # stops and saves wait for the end of the window
                training_step.apply()
                loss = step_loss / (index + 1 - position.batch_index)   # the window's mean loss
                position.global_step += 1
                position.batch_index = index + 1
                epoch_sum += loss
                epoch_count += 1
                window.add(loss)
                if window.count >= sync_every or position.global_step == total_steps:
                    shown_loss = window.flush()
                emit(ev.StepEnded(
                    step=position.global_step, epoch=epoch, loss=shown_loss, lrs=effective_lrs(optimizer),
                    seconds=time.monotonic() - step_start, images=step_images * world,
                    peak_memory_bytes=peaks.step_peak(),
                ))
                step_now = position.global_step
                if step_now < total_steps:          # the last step's file, samples and loss come at the end
                    if validate.due(step_now):
                        validate(step_now, epoch)
                    if save_every_steps and step_now % save_every_steps == 0:
                        if window.count:
                            shown_loss = window.flush()  # never save weights a NaN step has touched
                        position.epoch_loss_sum, position.epoch_loss_count = float(epoch_sum), epoch_count
                        saved, _ = checkpoints.save(step_file(plan.output_dir, plan.output_name, step_now), position,
                                                    with_state=with_state, validation_loss=validate(step_now, epoch))
                        last_saved = saved or last_saved
                    if sample_every_steps and step_now % sample_every_steps == 0:
                        make_samples(epoch, step=step_now)
                step_start, step_loss, step_images = time.monotonic(), None, 0
                # Several processes must agree (a collective, so a host sync): at the loss sync cadence only.
                stop = save_now = False
                if world == 1 or position.global_step % sync_every == 0 or position.global_step == total_steps:
                    stop, save_now = setup.agree(control.stop_requested, control.take_save_request(), world, device)
                if save_now or stop:
                    if window.count:
                        shown_loss = window.flush()      # never save weights a NaN step has touched
                    position.epoch_loss_sum, position.epoch_loss_count = float(epoch_sum), epoch_count
                    path = step_file(plan.output_dir, plan.output_name, position.global_step)
                    saved, state_path = checkpoints.save(path, position, with_state=with_state or stop,
                                                         validation_loss=validate.known(position.global_step))
                    last_saved = saved or last_saved
                if stop:
                    reason = control.stop_reason or ("stop requested" if world == 1
                                                     else "stop requested by another process")
                    outcome = ev.RunStopped(position.global_step, reason, saved_path=str(saved) if saved else None,
                                            state_path=str(state_path) if state_path else None)
                    emit(outcome)
                    accelerator.end_training()
                    return RunResult(saved, tuple(files), position.global_step, time.monotonic() - started,
                                     epoch_average, outcome)
            position.batch_index = len(batches)
            if window.count:
                shown_loss = window.flush()
            if epoch_count:
                epoch_average = epoch_sum.item() / epoch_count
                emit(ev.EpochEnded(epoch, position.global_step, epoch_average))
            position.epoch_loss_sum, position.epoch_loss_count = 0.0, 0
            done = position.global_step >= total_steps or epoch == plan.epochs
            if save_every and epoch % save_every == 0 and not done:
                saved, _ = checkpoints.save(epoch_file(plan.output_dir, plan.output_name, epoch), position,
                                            with_state=with_state, epoch_done=True,
                                            validation_loss=validate(position.global_step, epoch))
                last_saved = saved or last_saved
            if sample_every and epoch % sample_every == 0:
                make_samples(epoch)
            if done:
                break
            position.batch_index = 0

        final, _ = checkpoints.save(final_file(plan.output_dir, plan.output_name), position, with_state=False,
                                    epoch_done=True, validation_loss=validate(position.global_step, position.epoch))
    except setup.OUT_OF_MEMORY:
        _fail(emit, position, "out of GPU memory", OOM_ADVICE, last_saved)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:
        emit(ev.RunFailed(position.global_step, f"{type(exc).__name__}: {exc}"[:300],
                          last_good_path=str(last_saved) if last_saved else None))
        raise
    accelerator.wait_for_everyone()
    seconds = time.monotonic() - started
    final_path = final or final_file(plan.output_dir, plan.output_name)
    for line in peaks.report(run_estimate(plan, base.arch, unet)):
        emit(ev.Message(line))
    outcome = ev.RunFinished(position.global_step, seconds, str(final_path), epoch_average,
                             tuple(str(f) for f in files))
    emit(outcome)
    accelerator.end_training()
    return RunResult(final_path, tuple(files), position.global_step, seconds, epoch_average, outcome)


class LossWindow:
    """The losses since the last host sync; ``flush`` turns them into the shown (process-averaged) loss."""

    def __init__(self, accelerator, on_not_finite) -> None:
        self.accelerator = accelerator
        self.on_not_finite = on_not_finite
        self.sum = torch.zeros((), device=accelerator.device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.sum += loss
        self.count += 1

    def flush(self) -> float:
        total = self.sum
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(self.sum.clone(), "mean")
        value = total.item() / self.count
        self.sum.zero_()
        self.count = 0
        if not math.isfinite(value):
            self.on_not_finite("loss became NaN" if value != value else "loss became infinite")
        return value


def _guarded(sink: ev.Sink):
    """A sink that cannot kill training: its exceptions are logged."""
    def emit(event: ev.Event) -> None:
        try:
            sink(event)
        except Exception:  # a view's bug must not cost a training run
            log.exception("progress sink failed on %s", type(event).__name__)
    return emit


def _fail(emit, position: Position, reason: str, advice: str, last_saved: Optional[Path]):
    emit(ev.RunFailed(position.global_step, reason, advice,
                      last_good_path=str(last_saved) if last_saved else None))
    kept = f"; the last good file is {last_saved}" if last_saved else ""
    raise TrainingFailed(f"training stopped at step {position.global_step}: {reason}{kept}. "
                         f"What usually helps: {advice}")
