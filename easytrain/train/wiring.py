"""What the loop wires together before its first step, in the phase order of diffusers'
train_text_to_image_lora.py: accelerator, base model and its family's objective (frozen, in the mixed
precision), network (fp32 adapters), dataset and caches, optimizer and schedule, prepare.

Each phase fills in the ``Run`` record; the loop (train/loop.py) calls them in order and the epochs
(train/epochs.py) read the record. Every setting comes from the plan's records; what differs per family
comes from its Family and Objective (families/base.py).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from easytrain.train import events as ev
from easytrain.train import setup
from easytrain.train import state as tr_state
from easytrain.train.checkpoints import Checkpointer, resume_state
from easytrain.train.memory_peaks import PeakMemory
from easytrain.train.optimizers import build_optimizer
from easytrain.train.samples import SampleMaker, no_samples, sample_prompts
from easytrain.train.saving import run_metadata
from easytrain.train.schedulers import build_scheduler
from easytrain.train.step import TrainingStep, VaeEncoder
from easytrain.train.validation import build_validator


@dataclass
class Run:
    """Everything one training run holds, filled in phase by phase."""

    plan: Any
    emit: Callable[[ev.Event], None]
    accelerator: Any = None
    mixed_precision: str = "no"
    weight_dtype: torch.dtype = torch.float32
    device: Any = None
    peaks: Optional[PeakMemory] = None  # the steps' peak GPU memory apart from loading, caching and sampling
    world: int = 1
    rank: int = 0
    fingerprint: dict = field(default_factory=dict)
    base_model_hashes: Optional[Callable[[], dict]] = None  # the base file's hashes, read on a thread
    weights_ready: Callable[[], None] = lambda: None  # waits for the base weights still being converted
    encoders_cast_on_use: list = field(default_factory=list)  # frozen text encoders kept in the file's precision
    resumed: Optional[tr_state.SavedState] = None
    run_id: str = ""
    files: list[Path] = field(default_factory=list)
    base: Any = None
    family: Any = None
    objective: Any = None
    spec: Any = None
    network: Any = None
    unet: Any = None
    text_encoders: list = field(default_factory=list)
    dataset: Any = None
    caching: bool = False             # latents cached before the first step (the VAE then waits on the CPU)
    placed_by_accelerate: bool = True  # False: the family placed its denoiser itself (blocks on the CPU)
    latent_rng: Optional[torch.Generator] = None
    encode_latents: Optional[VaeEncoder] = None
    validate: Any = None
    optimizer: Any = None
    optimizer_name: str = ""
    lr_scheduler: Any = None
    steps_per_epoch: int = 0
    total_steps: int = 0
    unet_forward: Any = None
    compile_pending: bool = False
    noise_rng: Optional[torch.Generator] = None
    training_step: Optional[TrainingStep] = None
    checkpoints: Optional[Checkpointer] = None
    make_samples: Callable = no_samples
    sync_every: int = 1


def set_up(plan, emit, resume: Optional[str]) -> Run:
    """Accelerator, seeds, the state to resume, the run's own files, the base model, the network."""
    run = Run(plan, emit)
    network_settings = plan.network
    # With clip skip (SD1/SD2) or penultimate-layer conditioning (SDXL), a text encoder's last layers feed
    # nothing: DDP must expect adapters without grads whenever text encoders train.
    accelerator, run.mixed_precision = setup.make_accelerator(plan.precision.mixed_precision, emit,
                                                              network_settings.train_text_encoder)
    run.accelerator, run.device = accelerator, accelerator.device
    if run.device.type == "cpu":
        from easytrain.train.host_memory import keep_freed_memory

        keep_freed_memory()
    run.peaks = PeakMemory(run.device)
    run.weight_dtype = setup.DTYPES[run.mixed_precision]
    if accelerator.is_main_process and not plan.model.base_model.startswith("builtin:"):
        from easytrain.model import early_conversion
        from easytrain.network.base_hashes import hashes_in_background

        # on a core the imports and the loading leave idle, at the lowest priority, once the early conversion's
        # helper, which the first step waits for, has left it
        early = early_conversion.current()
        run.base_model_hashes = hashes_in_background(plan.model.base_model,
                                                     after=early.wait_for_helper if early is not None else None)
    from accelerate.utils import set_seed

    set_seed(plan.run.seed)
    run.world, run.rank = accelerator.num_processes, accelerator.process_index
    run.fingerprint = tr_state.fingerprint(plan, run.world)
    run.resumed = resume_state(plan, resume, run.fingerprint) if resume else None
    run.run_id = run.resumed.info.get("run_id") if run.resumed else uuid.uuid4().hex
    from easytrain.run_files import write_run_files

    run.files = write_run_files(plan) if accelerator.is_main_process else []
    load_model(run)
    build_network_on(run)
    return run


def load_model(run: Run) -> None:
    """The base model, frozen, in the mixed precision; its family and the family's objective."""
    plan, emit = run.plan, run.emit
    emit(ev.PhaseStarted("loading model"))
    phase_start = time.monotonic()
    from easytrain.families.load import load_base_model
    from easytrain.families.registry import family_for

    from easytrain.model.deferred_copies import copying_on_a_thread

    with copying_on_a_thread() as copies:  # the denoiser's and text encoders' values arrive on a thread
        base = load_base_model(plan.model.base_model, dtype=run.weight_dtype, resolved=plan.model.resolved,
                               options=plan.model.options, vae=plan.model.vae)
    run.weights_ready = copies.wait
    if plan.text_outputs_cached:
        run.encoders_cast_on_use = _cast_on_use(copies, base.text_encoders)
    run.base, run.family = base, family_for(base.arch)
    run.objective = run.family.objective(base, plan.loss, run.device)
    for frozen in (base.unet, base.vae, *base.text_encoders):
        frozen.requires_grad_(False)
    emit(ev.PhaseEnded("loading model", time.monotonic() - phase_start))


def _cast_on_use(copies, text_encoders) -> list:
    """Frozen text encoders that run once (their outputs cached) stay in the file's precision when it is not
    the training one, and compute in the training one layer by layer: SDXL's pair would be 3.3 GB of fp32
    written for one pass. Returns those encoders."""
    from easytrain.model.cast_on_use import compute_in

    kept = []
    for text_encoder in text_encoders:
        dtype = copies.keep_stored(text_encoder)
        if dtype is not None:
            compute_in(text_encoder, dtype)
            kept.append(text_encoder)
    return kept


def build_network_on(run: Run) -> None:
    """Adapters in fp32 on the frozen weights (or a given LoRA's), checkpointing and train modes."""
    plan, base, settings = run.plan, run.base, run.plan.network
    from easytrain.network.build import build_network

    run.spec = settings.spec()
    if run.spec.dora:
        run.weights_ready()  # DoRA starts from the base weights' norms
    models = run.family.network_models(base)
    run.network = build_network(models, run.family.network_targets(models, run.spec), run.spec, seed=plan.run.seed)
    if settings.initial_weights is not None and run.resumed is None:
        from easytrain.network.load import load_lora_into

        report = load_lora_into(run.network, settings.initial_weights)
        run.emit(ev.Message(f"continuing from {settings.initial_weights}: {report.modules_loaded} modules loaded"))
    run.network.cast_base(run.weight_dtype, leave=run.encoders_cast_on_use)
    run.family.store_base(base, run.weight_dtype)
    run.unet, run.text_encoders = base.unet, list(base.text_encoders)
    if plan.precision.gradient_checkpointing:
        run.unet.enable_gradient_checkpointing()
        if settings.train_text_encoder:
            for text_encoder in run.text_encoders:
                setup.checkpoint_text_encoder(text_encoder)
    run.unet.train(settings.train_unet)
    for text_encoder in run.text_encoders:
        text_encoder.train(settings.train_text_encoder)


def prepare_data(run: Run) -> None:
    """The dataset, the validation set, and the latents cached once (only the VAE on the GPU)."""
    plan, data, emit, device, vae = run.plan, run.plan.data, run.emit, run.device, run.base.vae
    from easytrain.data.dataset import TrainDataset

    run.dataset = dataset = TrainDataset(
        plan.train_scan, plan.reg_scan, plan.bucket_settings,
        shuffle_captions=data.shuffle_captions, keep_tokens=data.keep_tokens, flip_aug=data.flip_aug,
        prior_loss_weight=data.prior_loss_weight, seed=plan.run.seed, caption_extension=data.caption_extension,
        keep_tokens_separator=data.keep_tokens_separator, caption_dropout_rate=data.caption_dropout_rate,
        caption_dropout_every_n_epochs=data.caption_dropout_every_n_epochs,
        caption_tag_dropout_rate=data.caption_tag_dropout_rate, random_crop=data.random_crop,
        color_aug=data.color_aug,
    )
    run.latent_rng = torch.Generator(device=device).manual_seed(plan.run.seed + 1)
    run.caching = data.cache_latents != "off" and not plan.pixels_vary
    if data.cache_latents != "off" and not run.caching:
        emit(ev.Message("latents are not cached: random crop or colour jitter change the pixels every epoch"))
    # The VAE encodes in fp32 when caching (once, exact); per step it runs in the mixed precision if it can.
    vae_dtype = torch.float32 if run.caching or not run.family.vae_encodes_in_half else run.weight_dtype
    vae.to(device, dtype=vae_dtype)
    run.encode_latents = VaeEncoder(vae, device=device, dtype=vae_dtype, generator=run.latent_rng)
    run.validate = build_validator(plan, family=run.family, objective=run.objective, base=run.base, unet=run.unet,
                                   text_encoders=run.text_encoders, vae=vae, vae_dtype=vae_dtype, device=device,
                                   autocast=run.accelerator.autocast, emit=emit,
                                   cache_text=plan.text_outputs_cached)
    if run.caching:
        emit(ev.PhaseStarted("caching latents", len(dataset.samples)))
        run.peaks.phase_started()
        phase_start = time.monotonic()
        dataset.cache_latents(
            run.encode_latents, data.cache_latents,
            batch_size=setup.vae_batch_size(plan.resolution, data.batch_size),
            on_progress=lambda done, total: emit(ev.PhaseProgress("caching latents", done, total)),
            cache_key=f"{run.base.source}|{run.base.arch}" + (f"|vae={plan.model.vae}" if plan.model.vae else ""),
        )
        emit(ev.PhaseEnded("caching latents", time.monotonic() - phase_start,
                           run.peaks.phase_ended("caching latents")))
        vae.to("cpu")
        setup.empty_device_cache(device)
    run.weights_ready()
    run.placed_by_accelerate = run.family.to_device(run.base, device)
    for text_encoder in run.text_encoders:
        text_encoder.to(device)


def prepare_training(run: Run) -> None:
    """Optimizer and schedule, accelerate's prepare, the conditioner (text outputs cached ahead when they
    can be), the training step, checkpoints and samples."""
    plan, emit, device, world = run.plan, run.emit, run.device, run.world
    network_settings = plan.network
    groups = run.network.parameter_groups(plan.optimizer.unet_lr, plan.optimizer.text_encoder_lr)
    built = build_optimizer(plan.optimizer.name, groups, args=dict(plan.optimizer.args), device=device)
    for note in built.notes:
        emit(ev.Message(note, "warning"))
    run.optimizer_name = built.name
    # kohya's convention: the step count is per process (each process takes its share of an epoch).
    run.steps_per_epoch = math.ceil(plan.steps_per_epoch / world)
    run.total_steps = plan.total_steps if world == 1 else math.ceil(plan.total_steps / world)
    schedule = plan.schedule
    lr_scheduler = build_scheduler(built.optimizer, schedule.scheduler, total_steps=run.total_steps,
                                   warmup_steps=schedule.warmup_steps // world, restarts=schedule.restarts,
                                   power=schedule.power)

    trained = [run.unet] if network_settings.train_unet and run.placed_by_accelerate else []
    trained += run.text_encoders if network_settings.train_text_encoder else []
    prepared = run.accelerator.prepare(*trained, built.optimizer)
    # accelerate hands back the object itself, not a tuple, when given one (a denoiser the family placed
    # itself and no text encoder trained: only the optimizer)
    prepared = list(prepared) if isinstance(prepared, (tuple, list)) else [prepared]
    run.optimizer, run.lr_scheduler = prepared.pop(), lr_scheduler
    if network_settings.train_unet and not run.placed_by_accelerate:
        run.unet = run.accelerator.prepare_model(run.unet, device_placement=False)
    elif network_settings.train_unet:
        run.unet = prepared.pop(0)
    if network_settings.train_text_encoder:
        run.text_encoders = prepared
    run.unet_forward = setup.compiled(run.unet, emit) if plan.precision.torch_compile else run.unet
    run.compile_pending = run.unet_forward is not run.unet

    run.noise_rng = torch.Generator(device=device).manual_seed(plan.run.seed + 2 + run.rank)
    conditioner, text_home = _conditioner(run)
    ema = None
    if plan.saving.ema_decay:
        from easytrain.train.ema import LoraEMA

        ema = LoraEMA(run.network.trainable_parameters(), plan.saving.ema_decay)
    run.training_step = TrainingStep(
        accelerator=run.accelerator, conditioner=conditioner, encode_latents=run.encode_latents,
        objective=run.objective, noise_rng=run.noise_rng, optimizer=run.optimizer, lr_scheduler=lr_scheduler,
        trainable=run.network.trainable_parameters(), max_grad_norm=plan.optimizer.max_grad_norm,
        accumulation=plan.optimizer.gradient_accumulation_steps, ema=ema)
    # .item() waits for the GPU; on the CPU it costs nothing, so sync every step there.
    run.sync_every = 1 if device.type == "cpu" else plan.run.log_every_n_steps
    metadata = run_metadata(plan, spec=run.spec, arch=run.base.arch, prediction_type=run.objective.prediction_type,
                            zero_terminal_snr=run.objective.zero_terminal_snr, extra=run.objective.metadata(),
                            processes=world, base_model_hashes=run.base_model_hashes,
                            optimizer_name=built.name, mixed_precision=run.mixed_precision,
                            total_steps=run.total_steps, steps_per_epoch=run.steps_per_epoch)
    run.checkpoints = Checkpointer(
        plan=plan, accelerator=run.accelerator, network=run.network, optimizer=run.optimizer,
        lr_scheduler=lr_scheduler, generators={"noise_rng": run.noise_rng, "latent_rng": run.latent_rng},
        metadata=metadata, fingerprint=run.fingerprint, run_id=run.run_id, emit=emit, files=run.files, ema=ema)
    prompts = sample_prompts(plan)
    if prompts:
        run.make_samples = SampleMaker(
            plan=plan, prompts=prompts, family=run.family, base=run.base, accelerator=run.accelerator,
            unet=run.unet, text_encoders=run.text_encoders, device=device, dtype=run.weight_dtype, emit=emit,
            vae_home=torch.device("cpu") if run.caching else device, text_home=text_home, peaks=run.peaks)


def _conditioner(run: Run):
    """The family's conditioner; with frozen text encoders and fixed captions every caption (held-out ones
    too) is encoded now and the encoders then leave the GPU (kohya's cache_text_encoder_outputs; about 1.6 GB
    on SDXL). Returns it and where the text encoders wait between samples."""
    plan, emit, device = run.plan, run.emit, run.device
    cache_text = plan.text_outputs_cached
    conditioner = run.family.conditioner(
        run.text_encoders, run.base.tokenizers, clip_skip=plan.model.clip_skip,
        max_token_length=plan.model.max_token_length, device=device,
        train_text_encoder=plan.network.train_text_encoder, cache_text=cache_text, options=plan.model.options)
    text_home = torch.device("cpu") if cache_text else device
    if cache_text:
        emit(ev.PhaseStarted("caching text encoder outputs"))
        run.peaks.phase_started()
        phase_start = time.monotonic()
        with run.accelerator.autocast():
            conditioner.precache(run.dataset.fixed_captions())
            run.validate.precache_text()
        for text_encoder in run.text_encoders:
            text_encoder.to(text_home)
        setup.empty_device_cache(device)
        emit(ev.PhaseEnded("caching text encoder outputs", time.monotonic() - phase_start,
                           run.peaks.phase_ended("caching text encoder outputs")))
    return conditioner, text_home
