"""Benchmark: latent-cache throughput (images encoded per second).

    .venv/bin/python bench/latent_cache.py [--threads 2] [--reps 3] [--images 48] [--batch 4]

CPU, embedded tiny model: `TrainDataset.cache_latents` as the training loop
calls it (memory mode, the tiny VAE in fp32, one latent sample per image) on
copies of the demo images at 256 px, so decoding, resizing and the VAE are all
counted; and the VAE encode alone on the same pixels made beforehand.

GPU (when CUDA is present): the full-size SD1.5 VAE (built from the shipped
config on the meta device, random weights, nothing downloaded) encoding
random 512x512 images, fp32 (what the loop caches with) and bf16, batch 1 and
--batch. Every figure is the median over --reps repetitions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from step_overhead import machine_line  # noqa: E402


def demo_copies(root: Path, count: int) -> Path:
    """``count`` demo images with captions (copies, each file distinct) in root/1_shapes."""
    from easytrain.demo import DEMO_FOLDER, ensure_demo_dataset

    demo = REPO / "answers" / "demo" / "images"
    ensure_demo_dataset(demo)
    sources = sorted((demo / DEMO_FOLDER).glob("*.png"))
    folder = root / "1_shapes"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        source = sources[index % len(sources)]
        shutil.copyfile(source, folder / f"{index:04d}.png")
        caption = source.with_suffix(".txt")
        if caption.is_file():
            shutil.copyfile(caption, folder / f"{index:04d}.txt")
    return root


def tiny_cpu(args) -> None:
    from easytrain.data.buckets import BucketSettings
    from easytrain.data.dataset import TrainDataset
    from easytrain.data.scan import scan_image_folder
    from easytrain.families.load import load_base_model

    base = load_base_model("builtin:tiny", "sd1", dtype=torch.float32)
    vae = base.vae
    rng = torch.Generator().manual_seed(1)

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return vae.encode(pixels.float()).latent_dist.sample(generator=rng).float()

    with tempfile.TemporaryDirectory(prefix="easytrain-bench-") as tmp:
        scan = scan_image_folder(demo_copies(Path(tmp), args.images))
        settings = BucketSettings(resolution=(256, 256))
        full, vae_only = [], []
        for _ in range(args.reps):
            dataset = TrainDataset(scan, None, settings)
            start = time.perf_counter()
            dataset.cache_latents(encode, "memory", batch_size=args.batch)
            full.append(len(dataset.samples) / (time.perf_counter() - start))

            batches = dataset.epoch_batches(1, args.batch)
            dataset.drop_latent_cache()
            pixels = [dataset.load_batch(spec, 1).pixel_values for spec in batches]
            start = time.perf_counter()
            for tensor in pixels:
                encode(tensor)
            vae_only.append(sum(len(p) for p in pixels) / (time.perf_counter() - start))
    print(f"[CPU, {torch.get_num_threads()} threads] tiny VAE, {args.images} demo images at 256 px, batch {args.batch}: "
          f"cache_latents {statistics.median(full):.1f} images/s (decode + resize + encode), "
          f"VAE encode alone {statistics.median(vae_only):.1f} images/s")


def sd15_gpu(args) -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    from easytrain.families.registry import config_folder
    from gpu_step import materialise

    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(device)
    folder = config_folder("sd1") / "vae"
    with init_empty_weights():
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder))
    torch.manual_seed(0)
    materialise(vae, device).requires_grad_(False).eval()
    rng = torch.Generator(device=device).manual_seed(1)
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            print(f"[{gpu}] SD1.5 VAE bf16: not supported on this GPU; skipped")
            continue
        vae.to(dtype)
        for batch in sorted({1, args.batch}):
            pixels = torch.rand((batch, 3, 512, 512), device=device, dtype=dtype) * 2 - 1
            rates = []
            torch.cuda.reset_peak_memory_stats(device)
            with torch.no_grad():
                for _ in range(2):
                    vae.encode(pixels).latent_dist.sample(generator=rng)
                for _ in range(args.reps):
                    torch.cuda.synchronize(device)
                    start = time.perf_counter()
                    for _ in range(5):
                        vae.encode(pixels).latent_dist.sample(generator=rng)
                    torch.cuda.synchronize(device)
                    rates.append(5 * batch / (time.perf_counter() - start))
            peak = torch.cuda.max_memory_allocated(device) / 1024 ** 3
            print(f"[{gpu}] SD1.5 VAE encode, 512x512, {name}, batch {batch}: "
                  f"{statistics.median(rates):.1f} images/s, peak {peak:.2f} GiB", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--images", type=int, default=48, help="images for the tiny-model CPU figure")
    parser.add_argument("--batch", type=int, default=4, help="encode batch size")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU figures")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    print(f"machine: {machine_line()}")
    print(f"torch threads: {torch.get_num_threads()}")
    if not args.skip_cpu:
        tiny_cpu(args)
    if torch.cuda.is_available():
        sd15_gpu(args)
    else:
        print("no CUDA GPU: the full-size SD1.5 VAE figure needs one (run this script on a GPU machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
