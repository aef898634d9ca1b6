"""Benchmark: the cost of easytrain's training loop around the math, on the CPU.

    .venv/bin/python bench/step_overhead.py [--threads 2] [--reps 3] [--warmup 10] [--steps 40]
                                            [--image-size 128] [--profile FILE]

Times a steady-state step of `easytrain train` on the embedded tiny model (the
demo answers: LoRA dim 8 on UNet and text encoder, AdamW, batch 2, min-SNR 5,
latents cached in memory, gradient checkpointing on; the demo images scaled
to --image-size, default 128 px, kept at that size by bucket_no_upscale) with the
progress view, the metrics writer and the TensorBoard writer attached as the CLI attaches them, and a
bare loop in this file that does only the same math (text encoder and UNet
forward, loss, backward, gradient clipping, AdamW and lr-schedule step) on the
same batches made beforehand (cached latents, tokenized captions).

The two are interleaved step by step: a sink after the view and the metrics
writer runs one bare step each time a StepEnded event arrives, so other load
on a shared machine hits both alike. easytrain's figure is the wall time
from the end of that bare step to the next StepEnded, so it includes data
loading, tokenization, events, the view and the metrics writer. A run has
--warmup + --steps + 1 steps; the first --warmup of each are skipped; there
are --reps runs. Printed: the median step of each over all measured steps,
the fastest step, and the ratio: the median over steps of easytrain's step
over the bare step on the same batch (target: at most 1.10). Then, apart from
the step: the cost of each writer per step event, and of one validation
evaluation on 10% of the images held out (the loop spends it between steps).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from easytrain.train.validation import TIMESTEP_FRACTIONS  # noqa: E402

DEMO_ANSWERS = REPO / "answers" / "demo.json"
TARGET_RATIO = 1.10


def bench_images(root: Path, scale: float) -> Path:
    """The demo images and captions, resized by ``scale``, in ``root/5_shapes``."""
    from PIL import Image

    from easytrain.demo import DEMO_FOLDER, ensure_demo_dataset

    demo = REPO / "answers" / "demo" / "images"
    ensure_demo_dataset(demo)
    folder = root / DEMO_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for image_path in sorted((demo / DEMO_FOLDER).glob("*.png")):
        with Image.open(image_path) as image:
            size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
            image.convert("RGB").resize(size, Image.BICUBIC).save(folder / image_path.name)
        caption = image_path.with_suffix(".txt")
        if caption.is_file():
            (folder / caption.name).write_text(caption.read_text(encoding="utf-8"), encoding="utf-8")
    return root


def bench_answers(images: Path, output_dir: Path, total_steps: int, batch_size: int) -> dict:
    """The demo answers on ``images`` kept at their size (no upscale), trained by steps, one save at the end."""
    data = json.loads(DEMO_ANSWERS.read_text(encoding="utf-8"))
    data.update(
        image_folder=str(images),
        output_folder=str(output_dir),
        output_name="bench",
        length_by="steps",
        max_steps=total_steps,
        save_every_n_epochs=0,
        batch_size=batch_size,
        bucket_no_upscale=True,
        min_bucket_reso=64,
        sample_images=False,
    )
    data.pop("epochs", None)
    return data


def make_plan(data: dict, source: Path):
    from easytrain import answers as answers_file
    from easytrain.plan import TrainPlan

    return TrainPlan.from_answers(answers_file.from_dict(data, source=source))


@dataclass
class PairedTimes:
    """Seconds per measured step of one run: easytrain's and the bare loop's, step by step."""
    ours: list[float]
    bare: list[float]


# ---- easytrain, as `easytrain train` runs it, with a bare step between its steps ---------------------


class PairedClock:
    """A sink that times easytrain's steps and runs one bare step after each.

    easytrain's step k is the wall time from the end of the bare step after
    step k-1 to the arrival of StepEnded k; it covers data loading, the
    math, the events and the view and metrics sinks (which come before this
    one in the fan-out). Taking both figures a few milliseconds apart makes
    other load on the machine hit both alike.
    """

    def __init__(self, bare_step=None, batches=()) -> None:
        self.bare_step = bare_step
        self.batches = list(batches)
        self.ours: list[float] = []
        self.bare: list[float] = []
        self.resumed_at: float | None = None

    def __call__(self, event) -> None:
        from easytrain.train.events import StepEnded

        if not isinstance(event, StepEnded):
            return
        arrived = time.perf_counter()
        if self.resumed_at is not None:
            self.ours.append(arrived - self.resumed_at)
        if self.bare_step is not None and len(self.bare) < len(self.batches):
            start = time.perf_counter()
            self.bare_step(self.batches[len(self.bare)])
            self.bare.append(time.perf_counter() - start)
        self.resumed_at = time.perf_counter()


def run_easytrain(plan, clock: PairedClock, profile: cProfile.Profile | None = None) -> None:
    """`easytrain train` as the CLI runs it: plain view on a stream, the metrics and TensorBoard writers."""
    from easytrain.commands.train import tensorboard_sink
    from easytrain.progress import MetricsWriter, fan_out, make_view
    from easytrain.train.loop import run_training

    every = plan.answers.get("log_every_n_steps", 10)
    metrics = MetricsWriter(plan.saving.output_dir, plan.saving.output_name)
    board = tensorboard_sink(plan, every)
    sinks = [s for s in (metrics, board) if s is not None]
    stream = io.StringIO()
    try:
        with make_view(stream, plain=True, every=every) as view:
            if profile is not None:
                profile.enable()
            try:
                run_training(plan, fan_out(view, *sinks, clock))
            finally:
                if profile is not None:
                    profile.disable()
    finally:
        for sink in sinks:
            sink.close()


def time_paired(plan, warmup: int) -> PairedTimes:
    step, batches = bare_loop(plan)
    clock = PairedClock(step, batches)
    run_easytrain(plan, clock)
    if len(clock.bare) != len(batches):
        raise SystemExit(f"the bare loop ran {len(clock.bare)} of {len(batches)} steps; see the log above")
    # ours[k] is step k+2 (step 1 has no start mark); bare[k] is step k+1
    return PairedTimes(clock.ours[max(0, warmup - 1):], clock.bare[warmup:])


# ---- the bare loop: the same math on batches made beforehand ------------------------------------------


@dataclass
class Prepared:
    latents: torch.Tensor       # scaled, fp32
    input_ids: torch.Tensor     # (batch, chunks, 77)
    loss_weights: torch.Tensor


def bare_setup(plan, *, checkpointing: bool | None = None, adamw: dict | None = None,
               channels_last: bool = False):
    """Model, network, optimizer, scheduler and the batches of the run, as the loop builds them.

    The keywords are the variants --variants measures: gradient checkpointing
    forced on or off, torch AdamW with these extra arguments (foreach, fused)
    instead of the answers' optimizer, the UNet in channels_last.
    """
    from easytrain.data.dataset import TrainDataset
    from easytrain.families.load import load_base_model
    from easytrain.families.sd.targets import apply_network
    from easytrain.network.spec import NetworkSpec
    from easytrain.train.optimizers import build_optimizer
    from easytrain.train.schedulers import build_scheduler
    from easytrain.families.clip_text import tokenize_captions

    answers = plan.answers
    seed = int(answers.get("seed", 42))
    torch.manual_seed(seed)
    base = load_base_model(plan.model.base_model, answers.get("architecture", "auto"), dtype=torch.float32)
    for frozen in (base.unet, base.vae, base.text_encoder):
        frozen.requires_grad_(False)
    spec = NetworkSpec(answers.network_type, answers.network_dim, answers.network_alpha,
                       conv_dim=answers.conv_dim, conv_alpha=answers.conv_alpha,
                       train_unet=plan.network.train_unet, train_text_encoder=plan.network.train_text_encoder)
    network = apply_network(base.unet, base.text_encoder, spec, seed=seed)
    network.cast_base(torch.float32)
    if checkpointing is None:
        checkpointing = answers.get("gradient_checkpointing", True)
    if checkpointing:
        base.unet.enable_gradient_checkpointing()
        if plan.network.train_text_encoder:
            base.text_encoder.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False})
    if channels_last:
        base.unet.to(memory_format=torch.channels_last)
    base.unet.train(plan.network.train_unet)
    base.text_encoder.train(plan.network.train_text_encoder)

    dataset = TrainDataset(
        plan.train_scan, plan.reg_scan, plan.bucket_settings,
        shuffle_captions=bool(answers.shuffle_captions), keep_tokens=answers.keep_tokens or 0,
        flip_aug=bool(answers.flip_aug), prior_loss_weight=answers.get("prior_loss_weight", 1.0), seed=seed,
    )
    rng = torch.Generator().manual_seed(seed + 1)

    def encode(pixels):
        with torch.no_grad():
            return base.vae.encode(pixels.float()).latent_dist.sample(generator=rng).float()

    dataset.cache_latents(encode, "memory", batch_size=answers.batch_size)
    scale = float(base.vae.config.scaling_factor)
    max_tokens = int(answers.get("max_token_length", 225))
    batches: list[Prepared] = []
    epoch = 1
    while len(batches) < plan.total_steps:
        for spec_ in dataset.epoch_batches(epoch, answers.batch_size):
            batch = dataset.load_batch(spec_, epoch)
            latents = batch.latents.float() * scale
            if channels_last:
                latents = latents.contiguous(memory_format=torch.channels_last)
            batches.append(Prepared(latents,
                                    tokenize_captions(base.tokenizer, batch.captions, max_tokens),
                                    batch.loss_weights))
        epoch += 1
    batches = batches[: plan.total_steps]

    groups = network.parameter_groups(plan.optimizer.unet_lr, plan.optimizer.text_encoder_lr)
    if adamw is not None:
        optimizer = torch.optim.AdamW(groups, lr=groups[0]["lr"], **adamw)
    else:
        optimizer = build_optimizer(answers.optimizer, groups, args=answers.get("optimizer_args"),
                                    device=torch.device("cpu")).optimizer
    scheduler = build_scheduler(optimizer, answers.scheduler, total_steps=plan.total_steps,
                                warmup_steps=plan.schedule.warmup_steps, restarts=answers.get("scheduler_restarts", 1),
                                power=answers.get("scheduler_power", 1.0))
    return base, network, optimizer, scheduler, batches


def bare_loop(plan, *, cached_text: bool = False, **variant):
    """One bare training step as a function, and the batches to feed it.

    cached_text: the text encoder's states are computed once per batch
    beforehand (possible when it is not trained and captions do not change).
    """
    from easytrain.families.ddpm.diffusion import all_snr, diffusion_loss, sample_noise, sample_timesteps, training_target
    from easytrain.families.clip_text import encode_tokens

    base, network, optimizer, scheduler, batches = bare_setup(plan, **variant)
    if cached_text:
        if plan.network.train_text_encoder:
            raise ValueError("text states can be cached only when the text encoder is not trained")
        with torch.no_grad():
            states_of = {id(b): encode_tokens(base.text_encoder, b.input_ids, plan.model.clip_skip) for b in batches}
    answers = plan.answers
    unet, text_encoder, noise_scheduler = base.unet, base.text_encoder, base.noise_scheduler
    snr = all_snr(noise_scheduler)
    rng = torch.Generator().manual_seed(int(answers.get("seed", 42)) + 2)
    trainable = network.trainable_parameters()
    max_grad_norm = float(answers.get("max_grad_norm", 1.0) or 0.0)
    gamma = float(answers.get("min_snr_gamma", 0.0) or 0.0)
    timesteps_total = noise_scheduler.config.num_train_timesteps

    def step(batch: Prepared) -> float:
        noise = sample_noise(batch.latents, 0.0, rng)
        timesteps = sample_timesteps(batch.latents.shape[0], timesteps_total, "cpu", rng)
        noisy = noise_scheduler.add_noise(batch.latents, noise, timesteps)
        if cached_text:
            states = states_of[id(batch)]
        else:
            with torch.set_grad_enabled(plan.network.train_text_encoder):
                states = encode_tokens(text_encoder, batch.input_ids, plan.model.clip_skip)
        pred = unet(noisy, timesteps, states).sample
        target = training_target(noise_scheduler, batch.latents, noise, timesteps, base.prediction_type)
        loss = diffusion_loss(pred, target, timesteps, loss_weights=batch.loss_weights, snr=snr,
                              min_snr_gamma=gamma, prediction_type=base.prediction_type)
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step, batches


# ---- what validation and the TensorBoard writer cost, apart from the step ------------------------------


def time_sink_events(plan, events: int = 2000) -> dict[str, float]:
    """Microseconds per StepEnded event of each writer the CLI attaches, on a scripted run."""
    from easytrain.progress import MetricsWriter
    from easytrain.progress.tensorboard import TensorBoardWriter
    from easytrain.train import events as ev

    every = plan.answers.get("log_every_n_steps", 10)
    steps = [ev.StepEnded(step=i, epoch=1, loss=0.1, lrs=(1e-4, 1e-5), seconds=0.05, images=2)
             for i in range(1, events + 1)]
    costs = {}
    with tempfile.TemporaryDirectory(prefix="easytrain-bench-sinks-") as tmp:
        for name, sink in (("metrics.csv", MetricsWriter(tmp, "bench")),
                           (f"TensorBoard (every {every} steps)", TensorBoardWriter(tmp, "bench", every=every))):
            sink(ev.RunStarted(name="bench", total_steps=events, epochs=1, steps_per_epoch=events, batch_size=2,
                               num_images=events * 2, device="cpu", output_dir=tmp))
            start = time.perf_counter()
            for event in steps:
                sink(event)
            costs[name] = (time.perf_counter() - start) / events * 1e6
            sink.close()
    return costs


def time_validation(plan, fraction: float = 0.1, reps: int = 3) -> tuple[int, float]:
    """(held-out images, seconds per validation evaluation) on a share of the bench images."""
    import contextlib

    from easytrain.data.validation_split import split_off
    from easytrain.families.clip_text import encode_tokens, tokenize_captions
    from easytrain.families.registry import family_for
    from easytrain.train.validation import ValidationSet

    base, _, _, _, _ = bare_setup(plan)
    objective = family_for(base.arch).objective(base, plan.loss, "cpu")
    _, held = split_off(plan.train_scan, fraction, seed=1)
    validation = ValidationSet(held, plan.bucket_settings, batch_size=plan.answers.batch_size, seed=1,
                               encode=lambda pixels: base.vae.encode(pixels).latent_dist.mean,
                               model_latents=objective.model_latents, device="cpu")

    def conditioner(batch):
        ids = tokenize_captions(base.tokenizer, batch.captions, int(plan.answers.get("max_token_length", 225)))
        return {"encoder_hidden_states": encode_tokens(base.text_encoder, ids, plan.model.clip_skip)}

    times = []
    for _ in range(reps):
        start = time.perf_counter()
        validation.loss(objective, base.unet, conditioner, autocast=contextlib.nullcontext,
                        modules=(base.unet, base.text_encoder))
        times.append(time.perf_counter() - start)
    return validation.images, statistics.median(times)


# ---- variants of the bare step, to see what makes the math itself faster ------------------------------


VARIANTS = {
    # name: (plan overrides, bare_loop keywords)
    "demo (UNet + text encoder)": ({}, {}),
    "AdamW foreach=True": ({}, {"adamw": {"foreach": True}}),
    "AdamW fused=True": ({}, {"adamw": {"fused": True}}),
    "gradient checkpointing off": ({}, {"checkpointing": False}),
    "channels_last UNet": ({}, {"channels_last": True}),
    "UNet only": ({"train_parts": "unet_only", "shuffle_captions": False}, {}),
    "UNet only, text states cached": ({"train_parts": "unet_only", "shuffle_captions": False},
                                      {"cached_text": True}),
}


def time_variants(make, warmup: int, steps: int) -> dict[str, list[float]]:
    """Every variant's bare step, round robin step by step, the order rotating each round.

    Returns seconds per measured step, index-aligned across variants, so a
    step of one variant can be compared with the same step of another.
    """
    loops = {}
    for name, (overrides, keywords) in VARIANTS.items():
        loops[name] = bare_loop(make(overrides), **keywords)
    names = list(loops)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + steps):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            step, batches = loops[name]
            start = time.perf_counter()
            step(batches[index % len(batches)])
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def report_variants(times: dict[str, list[float]]) -> None:
    names = list(times)
    print("bare-step variants: median ms per step, and the median over steps of the step's time over the")
    print(f"reference's on the same step (reference: '{names[0]}'; for the cached-text line: 'UNet only'):")
    for name, values in times.items():
        reference = times["UNet only"] if name == "UNet only, text states cached" else times[names[0]]
        ratio = statistics.median(v / r for v, r in zip(values, reference))
        print(f"  {name:32s} {statistics.median(values) * 1000:8.2f} ms  x{ratio:.3f}")


# ---- report ------------------------------------------------------------------------------------------


def machine_line() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, python {platform.python_version()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="torch intra-op threads (default: min(2, cores))")
    parser.add_argument("--reps", type=int, default=3, help="training runs, each measured step by step")
    parser.add_argument("--warmup", type=int, default=10, help="steps skipped at the start of each run")
    parser.add_argument("--steps", type=int, default=40, help="steps measured per run")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=128,
                        help="the demo images are scaled from 256 to this many pixels (default 128: 16x16 latents; "
                             "256 is the demo run itself)")
    parser.add_argument("--variants", action="store_true",
                        help="instead: time variants of the bare step (fused/foreach AdamW, checkpointing off, "
                             "channels_last, cached text states) against each other")
    parser.add_argument("--profile", metavar="FILE",
                        help="also profile one easytrain run with cProfile into FILE and print the top entries")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    import logging

    logging.basicConfig(level=logging.WARNING)

    total = args.warmup + args.steps + 1
    print(f"machine: {machine_line()}")
    print(f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})")
    print(f"model: builtin:tiny, demo answers, batch {args.batch_size}, demo images at {args.image_size} px, "
          f"{args.reps} runs x ({args.warmup} warm-up + {args.steps} measured steps), interleaved step by step")
    ours: list[float] = []
    bare: list[float] = []
    rep_ratios = []
    with tempfile.TemporaryDirectory(prefix="easytrain-bench-") as tmp:
        tmp_path = Path(tmp)
        images = bench_images(tmp_path / "images", args.image_size / 256)
        data = bench_answers(images, tmp_path / "out", total, args.batch_size)
        plan = make_plan(data, tmp_path / "bench.json")
        if args.variants:
            times = time_variants(lambda overrides: make_plan({**data, **overrides}, tmp_path / "bench.json"),
                                  args.warmup, args.steps * args.reps)
            report_variants(times)
            return 0
        for rep in range(args.reps):
            times = time_paired(plan, args.warmup)
            if torch.get_num_threads() != args.threads:
                print(f"  note: torch threads changed to {torch.get_num_threads()}; set back to {args.threads}")
                torch.set_num_threads(args.threads)
            ours += times.ours
            bare += times.bare
            rep_ratio = statistics.median(times.ours) / statistics.median(times.bare)
            rep_ratios.append(rep_ratio)
            print(f"  rep {rep + 1}: easytrain {statistics.median(times.ours) * 1000:7.2f} ms/step, "
                  f"bare {statistics.median(times.bare) * 1000:7.2f} ms/step (medians), "
                  f"ratio {rep_ratio:.3f}; means {statistics.fmean(times.ours) * 1000:.2f} / "
                  f"{statistics.fmean(times.bare) * 1000:.2f} ms", flush=True)
        if args.profile:
            profile = cProfile.Profile()
            run_easytrain(plan, PairedClock(), profile)
            profile.dump_stats(args.profile)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        sink_costs = time_sink_events(plan)
        held, validation_seconds = time_validation(plan)

    ours_ms = statistics.median(ours) * 1000
    bare_ms = statistics.median(bare) * 1000
    ratio = ours_ms / bare_ms
    # the same step's batch (same bucket shape) taken a few milliseconds apart
    paired = statistics.median(o / b for o, b in zip(ours, bare))
    print(f"easytrain step: {ours_ms:.2f} ms (median of {len(ours)} steps; fastest {min(ours) * 1000:.2f} ms)")
    print(f"bare loop step: {bare_ms:.2f} ms (median of {len(bare)} steps; fastest {min(bare) * 1000:.2f} ms)")
    for name, micros in sink_costs.items():
        print(f"{name} writer: {micros:.1f} us per step event ({micros / 10 / bare_ms:.3f}% of a bare step)")
    print(f"validation: {validation_seconds * 1000:.1f} ms per evaluation of {held} held-out images "
          f"({len(TIMESTEP_FRACTIONS)} fixed timesteps each) = {validation_seconds * 1000 / bare_ms:.1f} bare steps, "
          "spent between steps at each save and every validate_every_n_steps")
    verdict = "PASS" if paired <= TARGET_RATIO else "FAIL"
    print(f"ratio: {paired:.3f} (median of per-step ratios; ratio of medians {ratio:.3f}, "
          f"median of per-run ratios {statistics.median(rep_ratios):.3f}; target <= {TARGET_RATIO:.2f}) {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
