"""TrainPlan: every number the run needs, computed once from the answers.

Nothing after the plan changes configuration: the trainer, the progress view,
`check` and the wizard's steps preview all read the same plan. Light imports
only (the dataset scan reads file headers, not pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional

from easytrain import questions as Q
from easytrain.answers import Answers
from easytrain.catalog import architecture_label, uses_clip_skip
from easytrain.data.buckets import BucketSettings, count_epoch
from easytrain.data.scan import DatasetScan, apply_repeats, scan_image_folder
from easytrain.errors import UserError
from easytrain.wording import plural
from easytrain.settings import (
    DataSettings, LossSettings, ModelSettings, NetworkSettings, OptimizerSettings, PrecisionSettings, RunSettings,
    SamplingSettings, SavingSettings, ScheduleSettings, ValidationSettings, frozen_mapping,
)

USUAL_STEPS = (1000, 3500)
SURELY_TOO_MANY = 10000


@dataclass(frozen=True)
class StepCount:
    """The steps arithmetic shown in the wizard's status line and in `check`."""
    images: int
    images_per_epoch: int
    batch_size: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    by_steps: bool = False         # the length is a number of steps: the run stops inside an epoch
    accumulation: int = 1          # batches per optimizer step; steps count optimizer steps, as kohya

    def line(self) -> str:
        """The arithmetic in one line of at most 78 characters for usual datasets (the wizard's bar at 80)."""
        batch = f"batch {self.batch_size}" if self.accumulation == 1 else \
            f"batch {self.batch_size} x {self.accumulation} accumulated"
        per_epoch = (f"{plural(self.images, 'image')} x repeats = {self.images_per_epoch} / {batch}"
                     f" = {plural(self.steps_per_epoch, 'step')}")
        if self.by_steps:
            return f"{per_epoch} per epoch; max {plural(self.total_steps, 'step')}, stops in epoch {self.epochs}"
        return f"{per_epoch} x {plural(self.epochs, 'epoch')} = {plural(self.total_steps, 'step')}"


def clip_skip_warning(answers: Answers, arch: Optional[str]) -> Optional[str]:
    """A warning when clip_skip is set away from its default for an architecture without one (SDXL)."""
    chosen = answers.get("clip_skip")
    if chosen is None or uses_clip_skip(arch) or chosen == Q.BY_ID["clip_skip"].default_for(answers.values()):
        return None
    return f"clip_skip {chosen} is ignored: {no_clip_skip_reason(arch)}"


def no_clip_skip_reason(arch: Optional[str]) -> str:
    """Why an architecture without clip skip has none: its family's ``clip_skip_reason`` hook, or SDXL's way."""
    from easytrain.families.registry import catalog_hook

    own = catalog_hook(arch, "clip_skip_reason") if arch else None
    if own is not None:
        return own(arch)
    return f"{architecture_label(arch)} always uses the penultimate layer of both text encoders"


def family_checks(plan: "TrainPlan", arch: str) -> "TrainPlan":
    """The plan after its family's checks (catalog hooks ``refused`` and ``plan_warnings``): one UserError listing
    every setting the family's trainer refuses, known before anything loads; its warnings added to the plan's."""
    import dataclasses

    from easytrain.families.registry import catalog_hook

    refuse, warn = catalog_hook(arch, "refused"), catalog_hook(arch, "plan_warnings")
    problems = list(refuse(plan, arch)) if refuse is not None else []
    if len(problems) == 1:
        raise UserError(f"{architecture_label(arch)} cannot train with {problems[0]}")
    if problems:
        raise UserError(f"{architecture_label(arch)} cannot train with these settings:", problems=problems)
    extra = [w for w in (warn(plan, arch) if warn is not None else []) if w not in plan.warnings]
    return dataclasses.replace(plan, warnings=plan.warnings + tuple(extra)) if extra else plan


def steps_warning(total_steps: int) -> Optional[str]:
    """A warning when the total is far from what LoRAs usually need (None when it looks right)."""
    low, high = USUAL_STEPS
    if total_steps > SURELY_TOO_MANY:
        return f"{total_steps} steps is almost surely a mistake (usual: {low}-{high}): fewer repeats or epochs"
    if total_steps > high * 1.5:
        return f"{total_steps} steps is well above the usual {low}-{high}: fewer repeats or epochs"
    if total_steps < low / 2:
        return f"{total_steps} steps is well below the usual {low}-{high}: more repeats or epochs"
    return None


def count_steps(*, images: int, images_per_epoch: int, steps_per_epoch: int, batch_size: int,
                length_by: str, epochs: Optional[int], max_steps: Optional[int], accumulation: int = 1) -> StepCount:
    """Epochs and total steps from one epoch's count, for either way of setting the length.

    ``steps_per_epoch`` counts batches; with accumulation the steps are optimizer
    steps, ceil(batches / accumulation) per epoch, as kohya counts them.
    """
    from easytrain.train.accumulation import optimizer_steps

    steps_per_epoch = optimizer_steps(steps_per_epoch, accumulation)
    if length_by == "steps" and max_steps:
        epochs_needed = max(1, math.ceil(max_steps / max(1, steps_per_epoch)))
        return StepCount(images, images_per_epoch, batch_size, steps_per_epoch, epochs_needed, max_steps, True,
                         accumulation)
    epochs = epochs or 1
    return StepCount(images, images_per_epoch, batch_size, steps_per_epoch, epochs, steps_per_epoch * epochs,
                     accumulation=accumulation)


BLOCK_KEYS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_dims", "block_alphas", "conv_block_dims",
              "conv_block_alphas")


def block_args_of(answers: Answers) -> dict:
    """kohya's block-wise strings that are set (checked when the answers loaded); {} for none."""
    args = {key: answers.get(key) for key in BLOCK_KEYS if answers.get(key)}
    if args:
        args["block_lr_zero_threshold"] = float(answer(answers, "block_lr_zero_threshold"))
    return args


def block_layout_of(answers: Answers, base_model: str, args: dict,
                    resolved=None) -> tuple[Optional[str], list[str]]:
    """The base model's block numbering for block-wise ``args`` (None without them) and warnings about them.

    The architecture is the one the loader will use (``resolved``, the plan's reading of the header, or read
    now). The lists per block were checked against the answer; with 'auto' they are checked here.
    """
    from easytrain.catalog import BLOCK_LAYOUTS, block_layout
    from easytrain.families.detect import resolve_architecture
    from easytrain.network.blocks import PER_BLOCK_KEYS, cut_lists, per_block

    if not args:
        return None, []
    arch = (resolved or resolve_architecture(base_model, answer(answers, "architecture"))).arch
    layout = BLOCK_LAYOUTS[block_layout(arch)]
    problems = []
    for key in PER_BLOCK_KEYS:
        try:
            if key in args:
                per_block(args[key], layout)
        except ValueError as exc:
            problems.append(f"{key}: {exc} ({base_model} is {layout.label})")
    if len(problems) == 1:
        raise UserError(problems[0])
    if problems:
        raise UserError("The block-wise settings do not fit the base model:", problems=problems)
    return layout.name, cut_lists(args, layout)


def family_options(answers: Answers) -> Mapping[str, Any]:
    """The answers to the base model's family's own questions that apply (defaults filled, paths absolute)."""
    values = answers.values()
    options = {}
    for key in sorted(Q.FAMILY_OPTION_KEYS):
        question = Q.BY_ID[key]
        if not question.applies(values):
            continue
        value = answer(answers, key)
        if question.kind in ("file", "folder", "model") and value not in (None, ""):
            value = str(answers.path(key))
        options[key] = value
    return MappingProxyType(options)


def trained_parts(answers: Answers, warnings: list[str]) -> tuple[bool, bool]:
    """(UNet trains, text encoder trains) by train_parts and the learning rates; UserError when nothing
    would train; the warnings about them are added to ``warnings``."""
    parts = answer(answers, "train_parts")
    text_encoder_lr = answer(answers, "text_encoder_lr")
    train_unet = parts in ("both", "unet_only")
    train_te = parts in ("both", "text_encoder_only") and (text_encoder_lr or 0) > 0
    if parts == "both" and not train_te:
        warnings.append("text encoder learning rate is 0: training the UNet only")
    if parts == "text_encoder_only" and not train_te:
        raise UserError("train_parts is text_encoder_only but text_encoder_lr is 0: nothing would train")
    if not train_te and not (train_unet and float(answer(answers, "unet_lr")) > 0):
        raise UserError(f"unet_lr is 0 and the text encoder is not trained (train_parts {parts}, "
                        f"text_encoder_lr {text_encoder_lr or 0:g}): nothing would train")
    if answer(answers, "cache_latents") != "off" and (answer(answers, "random_crop") or answer(answers, "color_aug")):
        warnings.append("random_crop/color_aug: latents are not cached (the pixels change every epoch), "
                        "so each step encodes its images: slower")
    return train_unet, train_te


def planned_block_layout(answers: Answers, base_model: str, block_args: dict, resolved,
                         warnings: list[str]) -> Optional[str]:
    """The block numbering block-wise settings use (None without them); their warnings go to ``warnings``.
    A layout without blocks (Flux): its family's ``refused`` hook says why, with the other refusals."""
    from easytrain.catalog import BLOCK_LAYOUTS
    from easytrain.catalog import block_layout as block_layout_name

    if block_args and BLOCK_LAYOUTS[block_layout_name(resolved.arch)].total == 0:
        return None
    layout, block_warnings = block_layout_of(answers, base_model, block_args, resolved)
    warnings += block_warnings
    return layout


def answer(answers: Answers, key: str) -> Any:
    """The answer to ``key``, or its question's default (the one place defaults live)."""
    value = answers.get(key)
    if value is None:
        value = Q.BY_ID[key].default_for(answers.values())
    return value


def bucket_settings(answers: Answers) -> BucketSettings:
    width = answer(answers, "resolution")
    height = answers.height or width
    return BucketSettings(
        resolution=(width, height),
        enable_bucket=bool(answer(answers, "enable_bucket")),
        min_reso=answer(answers, "min_bucket_reso"),
        max_reso=answer(answers, "max_bucket_reso"),
        step=answer(answers, "bucket_reso_steps"),
        no_upscale=bool(answer(answers, "bucket_no_upscale")),
    )


def scan_dataset(answers: Answers) -> tuple[DatasetScan, Optional[DatasetScan]]:
    """The training and regularization scans, from the folders or the dataset TOML."""
    ext = answer(answers, "caption_extension")
    toml_path = answers.path("dataset_config")
    if toml_path is not None:
        from easytrain.data.toml_config import scan_dataset_toml

        return apply_repeats(*scan_dataset_toml(toml_path, default_caption_extension=ext,
                                                alpha_mask=bool(answer(answers, "alpha_mask"))),
                             answers.get("folder_repeats"))
    train = scan_image_folder(answers.path("image_folder"), caption_extension=ext,
                              mask_folder=answers.path("mask_folder"), alpha_mask=bool(answer(answers, "alpha_mask")))
    reg = None
    if answers.use_regularization and answers.reg_image_folder:
        reg = scan_image_folder(answers.path("reg_image_folder"), caption_extension=ext, is_reg=True)
    return apply_repeats(train, reg, answers.get("folder_repeats"))


@dataclass(frozen=True)
class RunLength:
    """How the dataset and the answers add up: buckets, batch, epochs and steps."""
    bucket_settings: BucketSettings
    batch_size: int
    bucket_counts: dict
    steps: StepCount


def run_length(answers: Answers, train_scan: DatasetScan, reg_scan: Optional[DatasetScan]) -> RunLength:
    """The steps arithmetic of the plan; the wizard's steps line calls the same function."""
    settings = bucket_settings(answers)
    batch = answer(answers, "batch_size")
    toml_options = getattr(train_scan, "config_options", None) or {}
    if toml_options:  # a dataset TOML's own resolution, bucket and batch settings win
        from easytrain.data.toml_config import bucket_settings_from_config

        settings = bucket_settings_from_config(settings, toml_options)
        batch = toml_options.get("batch_size", batch)
    epoch = count_epoch(train_scan, reg_scan, settings, batch)
    count = count_steps(images=train_scan.total_images, images_per_epoch=epoch.images_per_epoch,
                        steps_per_epoch=epoch.steps_per_epoch, batch_size=batch,
                        length_by=answer(answers, "length_by"), epochs=answers.epochs, max_steps=answers.max_steps,
                        accumulation=int(answer(answers, "gradient_accumulation_steps")))
    return RunLength(settings, batch, dict(epoch.bucket_counts), count)


# Answers that change what training computes: a state saved with other values cannot continue.
# (output_name, comment, save_every_n_epochs, sample settings, save precision, logging do not.)
RESUME_KEYS = (
    "base_model", "architecture", "network_type", "network_dim", "network_alpha", "conv_dim", "conv_alpha",
    "train_parts", "optimizer", "optimizer_args", "unet_lr", "text_encoder_lr", "scheduler",
    "scheduler_restarts", "scheduler_power", "warmup_ratio", "resolution", "height", "batch_size",
    "seed", "shuffle_captions", "keep_tokens", "flip_aug", "bucket_no_upscale", "enable_bucket",
    "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "mixed_precision", "cache_latents",
    "min_snr_gamma", "noise_offset", "max_token_length", "caption_extension", "clip_skip",
    "max_grad_norm", "prior_loss_weight", "network_weights", "gradient_checkpointing", "vae",
)
# kohya's further settings: recorded only when set away from their defaults, so states saved before they
# existed still continue.
KOHYA_RESUME_KEYS = (
    "gradient_accumulation_steps", "caption_dropout_rate", "caption_dropout_every_n_epochs",
    "caption_tag_dropout_rate", "keep_tokens_separator", "random_crop", "color_aug", "alpha_mask", "mask_folder",
    "multires_noise_iterations", "multires_noise_discount", "adaptive_noise_scale", "ip_noise_gamma",
    "zero_terminal_snr", "v_parameterization", "scale_v_pred_loss_like_noise_pred", "debiased_estimation_loss",
    "loss_type", "huber_schedule", "huber_c", "huber_scale", "dora", "down_lr_weight", "mid_lr_weight",
    "up_lr_weight", "block_lr_zero_threshold", "block_dims", "block_alphas", "conv_block_dims",
    "conv_block_alphas", "ema", "ema_decay",
)
# (validation_split and validation_seed need no key: the dataset fingerprint holds the images trained on.)


@dataclass(frozen=True)
class TrainPlan:
    answers: Answers                # kept to write the answers copy; train code reads the records below
    model: ModelSettings
    data: DataSettings
    network: NetworkSettings
    optimizer: OptimizerSettings
    schedule: ScheduleSettings
    loss: LossSettings
    precision: PrecisionSettings
    saving: SavingSettings
    sampling: SamplingSettings
    validation: ValidationSettings
    run: RunSettings
    train_scan: DatasetScan         # without the held-out images
    reg_scan: Optional[DatasetScan]
    validation_scan: Optional[DatasetScan]
    bucket_settings: BucketSettings
    bucket_counts: dict
    images_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    resolution: tuple[int, int]
    output_files: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def steps(self) -> StepCount:
        return StepCount(self.train_scan.total_images, self.images_per_epoch, self.data.batch_size,
                         self.steps_per_epoch, self.epochs, self.total_steps, self.answers.length_by == "steps",
                         self.optimizer.gradient_accumulation_steps)

    @classmethod
    def from_answers(cls, answers: Answers) -> "TrainPlan":
        train_scan, reg_scan = scan_dataset(answers)
        if train_scan.total_images == 0:
            raise UserError(
                f"{train_scan.root}: no usable training images",
                problems=list(train_scan.problems) or ["put images in N_name folders (e.g. 10_mychar)"],
            )
        from easytrain.data.validation_split import hold_out

        train_scan, validation_scan = hold_out(
            train_scan, fraction=float(answer(answers, "validation_split") or 0.0),
            seed=int(answer(answers, "validation_seed")),
            folder=answers.path("validation_folder"), caption_extension=answer(answers, "caption_extension"))
        length = run_length(answers, train_scan, reg_scan)
        count = length.steps
        scheduler = answer(answers, "scheduler")
        warmup_ratio = answer(answers, "warmup_ratio") if scheduler != "constant" else 0.0
        warmup_steps = int(count.total_steps * (warmup_ratio or 0.0))

        output_dir = answers.path("output_folder") or (Path.cwd() / "output")
        name = answer(answers, "output_name")
        save_every = answer(answers, "save_every_n_epochs") or 0
        save_every_steps = int(answer(answers, "save_every_n_steps") or 0)
        output_files = _planned_files(output_dir, name, count.epochs, save_every, save_every_steps, count.total_steps)

        warnings = list(answers.warnings) + list(train_scan.warnings)
        if reg_scan is not None:
            warnings += list(reg_scan.warnings)
        train_unet, train_te = trained_parts(answers, warnings)
        base = answer(answers, "base_model")
        base_model = base if base.startswith("builtin:") else str(answers.path("base_model"))
        from easytrain.families.detect import resolve_architecture

        resolved = resolve_architecture(base_model, answer(answers, "architecture"))
        for warning in (steps_warning(count.total_steps), clip_skip_warning(answers, resolved.arch)):
            if warning:
                warnings.append(warning)
        block_args = block_args_of(answers)
        block_layout = planned_block_layout(answers, base_model, block_args, resolved, warnings)
        sample_images = bool(answer(answers, "sample_images"))
        prompts_file = answers.path("sample_prompts") if sample_images else None
        return family_checks(cls(
            answers=answers,
            model=ModelSettings(
                base_model=base_model,
                resolved=resolved,
                clip_skip=int(answer(answers, "clip_skip")),
                max_token_length=int(answer(answers, "max_token_length")),
                vae=answers.vae if answers.vae in (None, "builtin:tiny") else str(answers.path("vae")),
                options=family_options(answers),
            ),
            data=DataSettings(
                batch_size=length.batch_size,
                shuffle_captions=bool(answer(answers, "shuffle_captions")),
                keep_tokens=int(answer(answers, "keep_tokens") or 0),
                flip_aug=bool(answer(answers, "flip_aug")),
                prior_loss_weight=float(answer(answers, "prior_loss_weight")),
                caption_extension=answer(answers, "caption_extension"),
                cache_latents=answer(answers, "cache_latents"),
                tag_summary=answer(answers, "tag_summary"),
                keep_tokens_separator=answer(answers, "keep_tokens_separator") or "",
                caption_dropout_rate=float(answer(answers, "caption_dropout_rate")),
                caption_dropout_every_n_epochs=int(answer(answers, "caption_dropout_every_n_epochs")),
                caption_tag_dropout_rate=float(answer(answers, "caption_tag_dropout_rate")),
                random_crop=bool(answer(answers, "random_crop")),
                color_aug=bool(answer(answers, "color_aug")),
                alpha_mask=bool(answer(answers, "alpha_mask")),
                mask_folder=answers.path("mask_folder"),
            ),
            network=NetworkSettings(
                network_type=answer(answers, "network_type"),
                dim=answer(answers, "network_dim"),
                alpha=answer(answers, "network_alpha"),
                conv_dim=answers.conv_dim,
                conv_alpha=answers.conv_alpha,
                train_unet=train_unet,
                train_text_encoder=train_te,
                initial_weights=answers.path("network_weights"),
                dora=bool(answers.get("dora")),
                block_args=frozen_mapping(block_args),
                block_layout=block_layout,
            ),
            optimizer=OptimizerSettings(
                name=answer(answers, "optimizer"),
                args=frozen_mapping(answer(answers, "optimizer_args")),
                unet_lr=float(answer(answers, "unet_lr")),
                text_encoder_lr=float(answer(answers, "text_encoder_lr")) if train_te else 0.0,
                max_grad_norm=float(answer(answers, "max_grad_norm") or 0.0),
                gradient_accumulation_steps=int(answer(answers, "gradient_accumulation_steps")),
            ),
            schedule=ScheduleSettings(
                scheduler=scheduler,
                warmup_steps=warmup_steps,
                restarts=int(answer(answers, "scheduler_restarts")),
                power=float(answer(answers, "scheduler_power")),
            ),
            loss=LossSettings(
                min_snr_gamma=float(answer(answers, "min_snr_gamma") or 0.0),
                noise_offset=float(answer(answers, "noise_offset") or 0.0),
                adaptive_noise_scale=float(answers.get("adaptive_noise_scale") or 0.0),
                multires_noise_iterations=int(answer(answers, "multires_noise_iterations")),
                multires_noise_discount=float(answer(answers, "multires_noise_discount")),
                ip_noise_gamma=float(answer(answers, "ip_noise_gamma")),
                zero_terminal_snr=bool(answer(answers, "zero_terminal_snr")),
                v_parameterization=bool(answer(answers, "v_parameterization")),
                scale_v_pred_loss_like_noise_pred=bool(answer(answers, "scale_v_pred_loss_like_noise_pred")),
                debiased_estimation_loss=bool(answer(answers, "debiased_estimation_loss")),
                loss_type=answer(answers, "loss_type"),
                huber_schedule=answer(answers, "huber_schedule"),
                huber_c=float(answer(answers, "huber_c")),
                huber_scale=float(answer(answers, "huber_scale")),
                masked=train_scan.masked_images > 0 or (reg_scan is not None and reg_scan.masked_images > 0),
            ),
            precision=PrecisionSettings(
                mixed_precision=answer(answers, "mixed_precision"),
                save_precision=answer(answers, "save_precision"),
                gradient_checkpointing=bool(answer(answers, "gradient_checkpointing")),
                torch_compile=bool(answer(answers, "torch_compile")),
            ),
            saving=SavingSettings(
                output_dir=output_dir,
                output_name=name,
                every_n_epochs=int(save_every),
                every_n_steps=save_every_steps,
                save_state=bool(answer(answers, "save_state")),
                keep_states=int(answer(answers, "keep_states")),
                comment=answer(answers, "comment") or "",
                ema_decay=float(answer(answers, "ema_decay")) if answer(answers, "ema") else 0.0,
            ),
            sampling=SamplingSettings(
                prompts_file=prompts_file,
                every_n_epochs=int(answer(answers, "sample_every_n_epochs") or 0) if prompts_file else 0,
                every_n_steps=int(answer(answers, "sample_every_n_steps")) if prompts_file else 0,
                before_training=bool(answers.get("sample_before_training")) and prompts_file is not None,
            ),
            validation=ValidationSettings(
                images=validation_scan.total_images if validation_scan is not None else 0,
                every_n_steps=int(answer(answers, "validate_every_n_steps")) if validation_scan is not None else 0,
                seed=int(answer(answers, "validation_seed")),
            ),
            run=RunSettings(
                seed=int(answer(answers, "seed")),
                log_every_n_steps=max(1, int(answer(answers, "log_every_n_steps"))),
                tensorboard=bool(answer(answers, "tensorboard")),
            ),
            train_scan=train_scan,
            reg_scan=reg_scan,
            validation_scan=validation_scan,
            bucket_settings=length.bucket_settings,
            bucket_counts=length.bucket_counts,
            images_per_epoch=count.images_per_epoch,
            steps_per_epoch=count.steps_per_epoch,
            epochs=count.epochs,
            total_steps=count.total_steps,
            resolution=length.bucket_settings.resolution,
            output_files=tuple(str(p) for p in output_files),
            warnings=tuple(warnings),
        ), resolved.arch)

    def resume_answers(self) -> dict[str, Any]:
        """The answers a saved state must share to continue (RESUME_KEYS; kohya's further ones when set)."""
        answers = self.answers
        return {**{key: answers.get(key) for key in RESUME_KEYS},
                **{key: answers.get(key) for key in KOHYA_RESUME_KEYS
                   if answers.get(key) not in (None, Q.BY_ID[key].default_for(answers.values()))}}

    def _subsets(self) -> list:
        return [s for scan in (self.train_scan, self.reg_scan) if scan is not None for s in scan.subsets]

    @staticmethod
    def _own(value, run_value):
        """A dataset TOML subset's own setting, else the run's."""
        return run_value if value is None else value

    @property
    def captions_vary(self) -> bool:
        """Whether a caption can differ between epochs (shuffle or dropout, of the run or of a TOML subset),
        by the rules data/dataset.py trains with: then the text encoders' outputs cannot be cached."""
        from easytrain.data.captions import subset_caption_rules

        d = self.data
        return any(subset_caption_rules(
            s, shuffle=d.shuffle_captions, keep_tokens=d.keep_tokens, keep_tokens_separator=d.keep_tokens_separator,
            dropout_rate=d.caption_dropout_rate, dropout_every_n_epochs=d.caption_dropout_every_n_epochs,
            tag_dropout_rate=d.caption_tag_dropout_rate).varies for s in self._subsets())

    @property
    def text_outputs_cached(self) -> bool:
        """Frozen text encoders and fixed captions: each caption is encoded once before the first step and
        the encoders wait on the CPU (train/loop.py)."""
        return not self.network.train_text_encoder and not self.captions_vary

    @property
    def pixels_vary(self) -> bool:
        """Whether pixels differ between epochs (random crop, colour jitter): then latents are not cached."""
        d, own = self.data, self._own
        return any(own(s.random_crop, d.random_crop) or own(s.color_aug, d.color_aug) for s in self._subsets())

    def to_dict(self) -> dict[str, Any]:
        """The resolved plan as plain JSON data (written next to the outputs)."""
        return {
            "base_model": self.model.base_model,
            "output_dir": str(self.saving.output_dir),
            "output_name": self.saving.output_name,
            "datasets": [
                {"folder": str(s.folder), "repeats": s.repeats, "images": len(s.images), "is_reg": s.is_reg}
                for scan in (self.train_scan, self.reg_scan) if scan is not None for s in scan.subsets
            ],
            "buckets": {f"{w}x{h}": n for (w, h), n in sorted(self.bucket_counts.items())},
            "images_per_epoch": self.images_per_epoch,
            "batch_size": self.data.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "total_steps": self.total_steps,
            "warmup_steps": self.schedule.warmup_steps,
            "clip_skip": self.model.clip_skip,
            "mixed_precision": self.precision.mixed_precision,
            "save_precision": self.precision.save_precision,
            "train_unet": self.network.train_unet,
            "train_text_encoder": self.network.train_text_encoder,
            "unet_lr": self.optimizer.unet_lr,
            "text_encoder_lr": self.optimizer.text_encoder_lr,
            "resolution": list(self.resolution),
            "output_files": list(self.output_files),
            "warnings": list(self.warnings),
        }


def _planned_files(output_dir: Path, name: str, epochs: int, every: int, every_steps: int = 0,
                   total_steps: int = 0) -> list[Path]:
    files = []
    if every:
        files = [output_dir / f"{name}-{e:06d}.safetensors" for e in range(every, epochs, every)]
    if every_steps:
        files += [output_dir / f"{name}-step{s:08d}.safetensors" for s in range(every_steps, total_steps, every_steps)]
    files.append(output_dir / f"{name}.safetensors")
    return files
