"""The training loop: one plan in, LoRA files and events out.

It reads top to bottom in the phase order of diffusers'
train_text_to_image_lora.py: accelerator, output folder, base model (frozen,
in the mixed precision), network (fp32 adapters), dataset and latent cache,
optimizer and scheduler, prepare, epochs of steps with saves, final save.
Every number comes from the plan; nothing here changes configuration.
The only way in from outside is the control object, polled between steps.
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
from easytrain.train.control import TrainControl
from easytrain.train.diffusion import (
    all_snr, diffusion_loss, sample_noise, sample_timesteps, training_target,
)
from easytrain.train.optimizers import build_optimizer, effective_lrs
from easytrain.train.saving import (
    epoch_file, final_file, run_metadata, step_file, write_run_files,
)
from easytrain.train import state as tr_state
from easytrain.train.schedulers import build_scheduler
from easytrain.train.text import TextStateCache, encode_tokens, tokenize_captions

log = logging.getLogger(__name__)

_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
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


@dataclass
class Position:
    """Where the run stands; what a saved state needs to continue (epoch and batch are 1-/0-based)."""
    epoch: int = 1
    batch_index: int = 0            # the next batch of this process's share of the epoch
    global_step: int = 0
    epoch_loss_sum: float = 0.0     # so a resumed epoch reports the same average loss
    epoch_loss_count: int = 0

    def resume_point(self, epoch_done: bool) -> dict:
        """Where a run resumed from here starts: the next batch, or the next epoch after an epoch's save."""
        if epoch_done:
            return dict(epoch=self.epoch + 1, batch_index=0, global_step=self.global_step,
                        epoch_loss_sum=0.0, epoch_loss_count=0)
        return dict(epoch=self.epoch, batch_index=self.batch_index, global_step=self.global_step,
                    epoch_loss_sum=self.epoch_loss_sum, epoch_loss_count=self.epoch_loss_count)

    @classmethod
    def from_saved(cls, saved: dict) -> "Position":
        return cls(int(saved["epoch"]), int(saved["batch_index"]), int(saved["global_step"]),
                   float(saved.get("epoch_loss_sum", 0.0)), int(saved.get("epoch_loss_count", 0)))


def run_training(plan, sink: ev.Sink, control: Optional[TrainControl] = None, *,
                 resume: Optional[str] = None) -> RunResult:
    """Train the network described by ``plan``; write its files into plan.output_dir.

    ``resume`` is "latest" (the newest state in the output folder) or a state
    folder; the run then continues from that state's step.
    """
    control = control or TrainControl()
    emit = _guarded(sink)
    answers = plan.answers
    started = time.monotonic()

    # ---- accelerator and precision -------------------------------------------------------------
    # With clip skip, the text encoder's last layers feed nothing: DDP must expect adapters without grads.
    unused_parameters = plan.train_text_encoder and plan.clip_skip > 1
    accelerator, mixed_precision = _make_accelerator(plan.mixed_precision, emit, unused_parameters)
    device = accelerator.device
    weight_dtype = DTYPES[mixed_precision]
    seed = int(answers.get("seed", 42))
    from accelerate.utils import set_seed

    set_seed(seed)
    is_main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    run_fingerprint = tr_state.fingerprint(plan, world)
    resumed = _resume_point(plan, resume, run_fingerprint) if resume else None
    run_id = resumed.info.get("run_id") if resumed else uuid.uuid4().hex
    files: list[Path] = write_run_files(plan) if is_main else []

    # ---- base model, frozen, in the mixed precision -----------------------------------------------
    emit(ev.PhaseStarted("loading model"))
    phase_start = time.monotonic()
    from easytrain.model.load import load_base_model

    base = load_base_model(plan.base_model, answers.get("architecture", "auto"), dtype=weight_dtype)
    unet, vae, text_encoder, tokenizer = base.unet, base.vae, base.text_encoder, base.tokenizer
    for frozen in (unet, vae, text_encoder):
        frozen.requires_grad_(False)
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())      # PyTorch SDPA (flash / memory-efficient kernels)
    emit(ev.PhaseEnded("loading model", time.monotonic() - phase_start))

    # ---- network: adapters in fp32 on the frozen weights ------------------------------------------
    from easytrain.network.build import apply_network
    from easytrain.network.spec import NetworkSpec

    spec = NetworkSpec(answers.network_type, answers.network_dim, answers.network_alpha,
                       conv_dim=answers.conv_dim, conv_alpha=answers.conv_alpha,
                       train_unet=plan.train_unet, train_text_encoder=plan.train_text_encoder)
    network = apply_network(unet, text_encoder, spec, seed=seed)
    if plan.network_weights is not None and resumed is None:
        from easytrain.network.load import load_lora_into

        report = load_lora_into(network, plan.network_weights)
        emit(ev.Message(f"continuing from {plan.network_weights}: {report.modules_loaded} modules loaded"))
    network.cast_base(weight_dtype)
    unet.to(device)
    text_encoder.to(device)
    if answers.get("gradient_checkpointing", True):
        unet.enable_gradient_checkpointing()
        if plan.train_text_encoder:
            _checkpoint_text_encoder(text_encoder)
    unet.train(plan.train_unet)
    text_encoder.train(plan.train_text_encoder)

    # ---- dataset, latents cached once, then the VAE leaves the GPU --------------------------------
    from easytrain.data.dataset import TrainDataset

    dataset = TrainDataset(
        plan.train_scan, plan.reg_scan, plan.bucket_settings,
        shuffle_captions=bool(answers.shuffle_captions), keep_tokens=answers.keep_tokens or 0,
        flip_aug=bool(answers.flip_aug), prior_loss_weight=answers.get("prior_loss_weight", 1.0),
        seed=seed, caption_extension=answers.get("caption_extension", ".txt"),
    )
    cache_mode = answers.get("cache_latents", "off")
    latent_rng = torch.Generator(device=device).manual_seed(seed + 1)
    # The VAE encodes in fp32 when caching (once, exact); per step it runs in the mixed precision.
    vae_dtype = torch.float32 if cache_mode != "off" else weight_dtype
    vae.to(device, dtype=vae_dtype)

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            dist = vae.encode(pixels.to(device, dtype=vae_dtype)).latent_dist
            return dist.sample(generator=latent_rng).float()

    if cache_mode != "off":
        total_images = len(dataset.samples)
        emit(ev.PhaseStarted("caching latents", total_images))
        phase_start = time.monotonic()
        dataset.cache_latents(
            encode, cache_mode, batch_size=answers.batch_size,
            on_progress=lambda done, total: emit(ev.PhaseProgress("caching latents", done, total)),
            cache_key=f"{base.source}|{base.arch}",
        )
        emit(ev.PhaseEnded("caching latents", time.monotonic() - phase_start))
        vae.to("cpu")
        _empty_device_cache(device)
    scaling_factor = float(vae.config.scaling_factor)

    # ---- optimizer and learning-rate schedule ----------------------------------------------------
    groups = network.parameter_groups(plan.unet_lr, plan.text_encoder_lr)
    built = build_optimizer(answers.optimizer, groups, args=answers.get("optimizer_args"), device=device)
    for note in built.notes:
        emit(ev.Message(note, "warning"))
    # kohya's convention: the step count is per process (each process takes its share of an epoch).
    steps_per_epoch = math.ceil(plan.steps_per_epoch / world)
    total_steps = plan.total_steps if world == 1 else math.ceil(plan.total_steps / world)
    lr_scheduler = build_scheduler(built.optimizer, answers.scheduler, total_steps=total_steps,
                                   warmup_steps=plan.warmup_steps // world,
                                   restarts=answers.get("scheduler_restarts", 1),
                                   power=answers.get("scheduler_power", 1.0))
    lr_groups = tuple(g["name"] for g in built.optimizer.param_groups)

    # ---- prepare (DDP, autocast) -------------------------------------------------------------------
    trained = [m for m, on in ((unet, plan.train_unet), (text_encoder, plan.train_text_encoder)) if on]
    prepared = accelerator.prepare(*trained, built.optimizer)
    prepared = list(prepared) if isinstance(prepared, (list, tuple)) else [prepared]
    optimizer = prepared.pop()
    if plan.train_unet:
        unet = prepared.pop(0)
    if plan.train_text_encoder:
        text_encoder = prepared.pop(0)
    unet_forward = _compiled(unet, emit) if answers.get("torch_compile") else unet
    compile_pending = unet_forward is not unet

    noise_scheduler = base.noise_scheduler
    snr = all_snr(noise_scheduler).to(device)
    noise_rng = torch.Generator(device=device).manual_seed(seed + 2 + rank)
    trainable = network.trainable_parameters()
    max_grad_norm = float(answers.get("max_grad_norm", 1.0) or 0.0)
    min_snr_gamma = float(answers.get("min_snr_gamma", 0.0) or 0.0)
    noise_offset = float(answers.get("noise_offset", 0.0) or 0.0)
    max_token_length = int(answers.get("max_token_length", 225))
    # .item() waits for the GPU; on the CPU it costs nothing, so sync every step there.
    sync_every = 1 if device.type == "cpu" else max(1, int(answers.get("log_every_n_steps", 10)))
    metadata = run_metadata(plan, spec=spec, arch=base.arch, prediction_type=base.prediction_type,
                            optimizer_name=built.name, optimizer_args=answers.get("optimizer_args"),
                            mixed_precision=mixed_precision, total_steps=total_steps,
                            steps_per_epoch=steps_per_epoch)
    save_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}[plan.save_precision]
    keep_states = int(answers.get("keep_states", 2) or 2)

    # ---- training state: what --resume restores --------------------------------------------------
    def capture_state(position: "Position") -> dict:
        """This process's part of a state (collective: every process calls it)."""
        mine = {"rng": tr_state.global_rng_state(), "noise_rng": noise_rng.get_state(),
                "latent_rng": latent_rng.get_state()}
        per_process = [mine] if world == 1 else _gather_objects(mine)
        if not is_main:
            return {}
        return {
            "adapters": [p.detach().to("cpu", torch.float32).clone() for p in trainable],
            "optimizer": optimizer.state_dict(),
            "scheduler": lr_scheduler.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "processes": per_process,
        }

    def restore_state(state: dict) -> None:
        adapters = state["adapters"]
        if len(adapters) != len(trainable) or any(a.shape != p.shape for a, p in zip(adapters, trainable)):
            raise UserError(f"{resumed.folder}: the saved adapters do not match this network "
                            "(network type, dim or targets changed)")
        with torch.no_grad():
            for param, saved in zip(trainable, adapters):
                param.copy_(saved.to(param.device))
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(state["scaler"])
        mine = state["processes"][rank]
        tr_state.set_global_rng_state(mine["rng"])
        noise_rng.set_state(mine["noise_rng"].cpu())
        latent_rng.set_state(mine["latent_rng"].cpu())

    def save(path: Path, position: "Position", *, with_state: bool,
             epoch_done: bool = False) -> tuple[Optional[Path], Optional[Path]]:
        """Write the network (and its state) now, main process only; every process takes part."""
        state = capture_state(position) if with_state else None
        accelerator.wait_for_everyone()
        if not is_main:
            return None, None
        from easytrain.network.export import save_lora

        save_lora(network, path, dtype=save_dtype,
                  metadata=metadata.for_save(steps=position.global_step, epoch=position.epoch))
        files.append(Path(path))
        state_path = None
        if state is not None:
            state_path = tr_state.write_state(
                tr_state.state_folder_for(path), position=position.resume_point(epoch_done),
                fingerprint=run_fingerprint, training=state, run_name=plan.output_name, run_id=run_id,
                lora_file=str(path))
            tr_state.prune_states(plan.output_dir, plan.output_name, run_id, keep_states)
        emit(ev.CheckpointSaved(str(path), position.epoch, position.global_step,
                                str(state_path) if state_path else None, epoch_finished=epoch_done))
        return Path(path), state_path

    # A frozen text encoder and fixed captions give the same states every epoch: encode each caption once.
    text_states = None
    if not plan.train_text_encoder and not dataset_shuffles_captions(plan):
        text_states = TextStateCache(text_encoder, tokenizer, clip_skip=plan.clip_skip,
                                     max_token_length=max_token_length, device=device)

    def training_step(batch, forward) -> torch.Tensor:
        """Forward and backward of one batch through ``forward`` (the UNet, maybe compiled); returns the loss."""
        with torch.no_grad():
            latents = batch.latents if batch.latents is not None else encode(batch.pixel_values)
            latents = latents.to(device, dtype=torch.float32) * scaling_factor
        noise = sample_noise(latents, noise_offset, noise_rng)
        timesteps = sample_timesteps(latents.shape[0], noise_scheduler.config.num_train_timesteps, device, noise_rng)
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
        with accelerator.autocast():
            if text_states is not None:
                hidden_states = text_states(batch.captions)
            else:
                input_ids = tokenize_captions(tokenizer, batch.captions, max_token_length).to(device)
                with torch.set_grad_enabled(plan.train_text_encoder):
                    hidden_states = encode_tokens(text_encoder, input_ids, plan.clip_skip)
            model_pred = forward(noisy_latents, timesteps, hidden_states).sample
        target = training_target(noise_scheduler, latents, noise, timesteps, base.prediction_type)
        loss = diffusion_loss(model_pred, target, timesteps, loss_weights=batch.loss_weights.to(device),
                              snr=snr, min_snr_gamma=min_snr_gamma, prediction_type=base.prediction_type)
        accelerator.backward(loss)
        if max_grad_norm > 0 and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(trainable, max_grad_norm)
        optimizer.step()
        if not accelerator.optimizer_step_was_skipped:   # fp16 overflow: the scaler skipped the step
            lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    # ---- samples ----------------------------------------------------------------------------------
    prompts = _sample_prompts(plan, seed)

    def make_samples(epoch: int) -> None:
        """Sample images from the live modules (main process only; the others wait)."""
        if is_main:
            _render_samples(plan, prompts, epoch, emit, accelerator=accelerator, unet=unet, vae=vae,
                            text_encoder=text_encoder, tokenizer=tokenizer, base=base, device=device,
                            dtype=weight_dtype, max_token_length=max_token_length,
                            vae_home=device if cache_mode == "off" else torch.device("cpu"))
        accelerator.wait_for_everyone()

    # ---- the epochs ----------------------------------------------------------------------------------
    position = Position()
    if resumed is not None:
        restore_state(tr_state.load_training(resumed))
        position = Position.from_saved(resumed.position)
        emit(ev.Message(f"resuming from {resumed.folder} at step {position.global_step} "
                        f"(epoch {position.epoch}, batch {position.batch_index + 1})"))
    emit(ev.RunStarted(
        name=plan.output_name, total_steps=total_steps, epochs=plan.epochs, steps_per_epoch=steps_per_epoch,
        batch_size=answers.batch_size, num_images=plan.images_per_epoch, device=_device_text(device),
        output_dir=str(plan.output_dir), start_step=position.global_step, lr_groups=lr_groups,
    ))
    save_every = int(answers.get("save_every_n_epochs", 0) or 0)
    sample_every = int(answers.get("sample_every_n_epochs", 1) or 0) if prompts else 0
    with_state = bool(answers.get("save_state", True))
    last_saved: Optional[Path] = _existing_lora(resumed)
    epoch_average: Optional[float] = None
    shown_loss = float("nan")
    window_sum = torch.zeros((), device=device)
    window_count = 0

    def flush_window() -> float:
        """The mean loss of the steps since the last flush (a host sync); stops the run on NaN/inf."""
        nonlocal window_count
        total = window_sum
        if world > 1:
            total = accelerator.reduce(window_sum.clone(), "mean")
        value = total.item() / window_count
        window_sum.zero_()
        window_count = 0
        if not math.isfinite(value):
            _fail(emit, position, "loss became NaN" if value != value else "loss became infinite",
                  NAN_ADVICE, last_saved)
        return value

    try:
        if prompts and answers.get("sample_before_training") and resumed is None:
            make_samples(0)
        for epoch in range(position.epoch, plan.epochs + 1):
            position.epoch = epoch
            batches = _process_share(dataset.epoch_batches(epoch, answers.batch_size), rank, world)
            epoch_sum = torch.full((), position.epoch_loss_sum, device=device)
            epoch_count = position.epoch_loss_count
            for index in range(position.batch_index, len(batches)):
                if position.global_step >= total_steps:
                    break
                step_start = time.monotonic()
                batch = dataset.load_batch(batches[index], epoch)
                if compile_pending:
                    loss, unet_forward = _first_compiled_step(training_step, batch, unet_forward, unet, emit,
                                                              optimizer, (noise_rng, latent_rng))
                    compile_pending = False
                else:
                    loss = training_step(batch, unet_forward)
                position.global_step += 1
                position.batch_index = index + 1
                epoch_sum += loss
                window_sum += loss
                epoch_count += 1
                window_count += 1
                if window_count >= sync_every or position.global_step == total_steps:
                    shown_loss = flush_window()
                emit(ev.StepEnded(
                    step=position.global_step, epoch=epoch, loss=shown_loss, lrs=effective_lrs(optimizer),
                    seconds=time.monotonic() - step_start, images=len(batch.captions) * world,
                    peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
                ))
                # Several processes must agree (a collective, so a host sync): at the loss sync cadence only.
                stop = save_now = False
                if world == 1 or position.global_step % sync_every == 0 or position.global_step == total_steps:
                    stop, save_now = _agree(control.stop_requested, control.take_save_request(), world, device)
                if save_now or stop:
                    if window_count:
                        shown_loss = flush_window()      # never save weights a NaN step has touched
                    position.epoch_loss_sum, position.epoch_loss_count = float(epoch_sum), epoch_count
                    path = step_file(plan.output_dir, plan.output_name, position.global_step)
                    saved, state_path = save(path, position, with_state=with_state or stop)
                    last_saved = saved or last_saved
                if stop:
                    reason = control.stop_reason or ("stop requested" if world == 1 else "stop requested by another process")
                    outcome = ev.RunStopped(position.global_step, reason, saved_path=str(saved) if saved else None,
                                            state_path=str(state_path) if state_path else None)
                    emit(outcome)
                    accelerator.end_training()
                    return RunResult(saved, tuple(files), position.global_step, time.monotonic() - started,
                                     epoch_average, outcome)
            position.batch_index = len(batches)
            if window_count:
                shown_loss = flush_window()
            if epoch_count:
                epoch_average = epoch_sum.item() / epoch_count
                emit(ev.EpochEnded(epoch, position.global_step, epoch_average))
            position.epoch_loss_sum, position.epoch_loss_count = 0.0, 0
            done = position.global_step >= total_steps or epoch == plan.epochs
            if save_every and epoch % save_every == 0 and not done:
                saved, _ = save(epoch_file(plan.output_dir, plan.output_name, epoch), position,
                                with_state=with_state, epoch_done=True)
                last_saved = saved or last_saved
            if sample_every and epoch % sample_every == 0:
                make_samples(epoch)
            if done:
                break
            position.batch_index = 0

        final, _ = save(final_file(plan.output_dir, plan.output_name), position, with_state=False, epoch_done=True)
    except _OUT_OF_MEMORY:
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
    outcome = ev.RunFinished(position.global_step, seconds, str(final_path), epoch_average,
                             tuple(str(f) for f in files))
    emit(outcome)
    accelerator.end_training()
    return RunResult(final_path, tuple(files), position.global_step, seconds, epoch_average, outcome)


# ---- helpers --------------------------------------------------------------------------------------


def _guarded(sink: ev.Sink):
    """A sink that cannot kill training: its exceptions are logged."""
    def emit(event: ev.Event) -> None:
        try:
            sink(event)
        except Exception:  # a view's bug must not cost a training run
            log.exception("progress sink failed on %s", type(event).__name__)
    return emit


def _make_accelerator(mixed_precision: str, emit, unused_parameters: bool = False):
    """An Accelerator for this run; fp16 falls back to fp32 where there is no GPU."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState

    from accelerate.utils import parse_flag_from_env

    # Without a GPU, a distributed launch (torchrun, accelerate launch) runs on CPU processes over gloo.
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    device = PartialState(cpu=cpu).device
    if mixed_precision == "fp16" and device.type == "cpu":
        emit(ev.Message("fp16 mixed precision needs a GPU; training in fp32 on the CPU "
                        "(bf16 also works on the CPU)", "warning"))
        mixed_precision = "no"
    # Several runs in one process (a queue, the tests) may each pick a precision;
    # the process group (PartialState) stays as it is.
    AcceleratorState._reset_state(reset_partial_state=False)
    from accelerate.utils import DistributedDataParallelKwargs

    ddp = DistributedDataParallelKwargs(find_unused_parameters=unused_parameters)
    return (Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=1, cpu=cpu,
                        kwargs_handlers=[ddp]), mixed_precision)


def _checkpoint_text_encoder(text_encoder) -> None:
    # Non-reentrant: the frozen embeddings feed no grad into the checkpointed layers,
    # and the reentrant variant would then drop the adapters' gradients.
    kwargs = {"use_reentrant": False}
    if hasattr(text_encoder, "activation_checkpointing_enable"):      # transformers >= 5.x
        text_encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _process_share(batches: list, rank: int, world: int) -> list:
    """This process's batches: every world-th one, padded by wrapping so all processes step equally."""
    if world == 1:
        return batches
    per_process = math.ceil(len(batches) / world)
    padded = batches + batches[: per_process * world - len(batches)]
    return padded[rank::world]


def _device_text(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _empty_device_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _fail(emit, position: Position, reason: str, advice: str, last_saved: Optional[Path]):
    emit(ev.RunFailed(position.global_step, reason, advice,
                      last_good_path=str(last_saved) if last_saved else None))
    kept = f"; the last good file is {last_saved}" if last_saved else ""
    raise TrainingFailed(f"training stopped at step {position.global_step}: {reason}{kept}. "
                         f"What usually helps: {advice}")


# ---- resume ---------------------------------------------------------------------------------------


def _resume_point(plan, which: str, current: dict) -> tr_state.SavedState:
    """The state to continue from, after checking it was made with compatible answers."""
    state = tr_state.find_state(plan.output_dir, which)
    problems = tr_state.fingerprint_differences(state.info.get("fingerprint", {}), current)
    if problems:
        raise UserError(f"--resume: {state.folder} was saved with other settings; resuming needs the same "
                        "answers (change them back, or start a new run without --resume)", problems=problems)
    if state.global_step >= math.ceil(current["total_steps"] / max(1, current["processes"])):
        raise UserError(f"--resume: {state.folder} is at step {state.global_step}, the end of this run; "
                        "nothing left to train")
    return state


def _existing_lora(state: Optional[tr_state.SavedState]) -> Optional[Path]:
    lora = state.info.get("lora_file") if state is not None else None
    return Path(lora) if lora and Path(lora).is_file() else None


def _gather_objects(obj) -> list:
    from accelerate.utils import gather_object

    return gather_object([obj])


def _agree(stop: bool, save: bool, world: int, device: torch.device) -> tuple[bool, bool]:
    """Every process must stop or save at the same step (or the next collective hangs): OR the flags."""
    if world == 1:
        return stop, save
    import torch.distributed as dist

    flags = torch.tensor([int(stop), int(save)], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    stop_all, save_all = (bool(v) for v in flags.tolist())
    return stop_all, save_all


# ---- torch.compile ------------------------------------------------------------------------------


def _compiled(unet, emit):
    """torch.compile(unet), or unet itself with a message when compiling is not possible here."""
    try:
        emit(ev.Message("torch_compile: compiling the UNet (the first step takes longer)"))
        return torch.compile(unet)
    except Exception as exc:  # compile is an optional speed-up: say why and train uncompiled
        emit(ev.Message(f"torch_compile failed ({type(exc).__name__}: {str(exc)[:200]}); training uncompiled",
                        "warning"))
        return unet


def dataset_shuffles_captions(plan) -> bool:
    """Whether any subset shuffles its captions (the answers' setting, or a dataset TOML's own)."""
    default = bool(plan.answers.shuffle_captions)
    subsets = [s for scan in (plan.train_scan, plan.reg_scan) if scan is not None for s in scan.subsets]
    return any(default if s.shuffle_caption is None else s.shuffle_caption for s in subsets)


def _first_compiled_step(training_step, batch, compiled, unet, emit, optimizer, generators):
    """The first step with the compiled UNet (compilation happens here); on failure, redo it uncompiled."""
    saved = [g.get_state() for g in generators]
    try:
        return training_step(batch, compiled), compiled
    except _OUT_OF_MEMORY:
        raise
    except Exception as exc:  # a compiler error; the eager module computes the same thing
        log.warning("torch.compile failed", exc_info=True)
        emit(ev.Message(f"torch_compile failed ({type(exc).__name__}: {str(exc).strip()[:200]}); "
                        "training uncompiled", "warning"))
    for generator, state in zip(generators, saved):
        generator.set_state(state)
    optimizer.zero_grad(set_to_none=True)
    return training_step(batch, unet), unet


# ---- samples --------------------------------------------------------------------------------------


def _sample_prompts(plan, seed: int) -> list:
    """The prompts to sample with, [] when sampling is off. A bad prompts file is a UserError now."""
    if not plan.answers.get("sample_images") or plan.sample_prompts is None:
        return []
    from easytrain.sampling.prompts import parse_prompts_file

    return parse_prompts_file(plan.sample_prompts, default_size=tuple(plan.resolution))


def _render_samples(plan, prompts, epoch: int, emit, *, accelerator, unet, vae, text_encoder, tokenizer,
                    base, device, dtype, max_token_length: int, vae_home) -> None:
    """One image per prompt with the live modules, as events; a failure is reported, training goes on."""
    from easytrain.sampling.generate import generate_samples

    emit(ev.PhaseStarted("sampling", len(prompts)))
    started = time.monotonic()
    vae.to(device)
    try:
        paths = generate_samples(
            unet=accelerator.unwrap_model(unet), vae=vae, text_encoder=accelerator.unwrap_model(text_encoder),
            tokenizer=tokenizer, prompts=prompts, output_dir=plan.output_dir, name=plan.output_name,
            epoch=epoch, device=device, dtype=dtype, clip_skip=plan.clip_skip,
            prediction_type=base.prediction_type, scheduler_config=base.noise_scheduler.config,
            max_token_length=max_token_length,
            on_progress=lambda done, total: emit(ev.PhaseProgress("sampling", done, total)),
        )
    except _OUT_OF_MEMORY:
        _empty_device_cache(device)
        emit(ev.Message("sample images skipped: out of GPU memory while sampling (smaller sample sizes "
                        "or fewer steps help); training goes on", "warning"))
        paths = []
    except UserError:
        raise
    except Exception as exc:  # a sample is a preview: never worth the training run
        log.exception("sampling failed")
        emit(ev.Message(f"sample images failed ({type(exc).__name__}: {str(exc)[:200]}); training goes on",
                        "warning"))
        paths = []
    finally:
        vae.to(vae_home)
        _empty_device_cache(device)
    for path, prompt in zip(paths, prompts):
        emit(ev.SampleSaved(str(path), epoch, prompt.prompt))
    emit(ev.PhaseEnded("sampling", time.monotonic() - started))
