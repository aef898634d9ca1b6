"""Latent cache: every image encoded once, in memory or as one file per image on disk.

Disk files are named by the image's content hash, the bucket size, the flip
and a caller-given key (for the VAE), so an unchanged image is found again and
a changed one is not. Files are written atomically: an interrupted build
leaves only complete files behind, and the next build reuses them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from easytrain.data.buckets import Size
from easytrain.data.pixels import to_tensor
from easytrain.fsutil import atomic_write_bytes

if TYPE_CHECKING:
    from easytrain.data.dataset import TrainDataset

CACHE_FORMAT = "easytrain-latent-1"
Key = tuple[int, bool]  # (sample index, flipped)


@dataclass
class LatentCache:
    mode: str
    # memory: one stacked tensor per bucket and each key's row in it
    stacks: dict[Size, torch.Tensor] = field(default_factory=dict)
    rows: dict[Key, int] = field(default_factory=dict)
    bucket_of: dict[Key, Size] = field(default_factory=dict)
    # disk: each key's file
    files: dict[Key, Path] = field(default_factory=dict)

    def get(self, samples: list[int], flips: list[bool]) -> torch.Tensor:
        keys = list(zip(samples, (bool(f) for f in flips)))
        if self.mode == "memory":
            bucket = self.bucket_of[keys[0]]
            rows = torch.tensor([self.rows[k] for k in keys], dtype=torch.long)
            return self.stacks[bucket].index_select(0, rows)
        return torch.stack([load_file(self.files[k])["latents"] for k in keys])


def cache_file_name(content_hash: str, bucket: Size, flip: bool, cache_key: str) -> str:
    name = f"{content_hash[:40]}_{bucket[0]}x{bucket[1]}"
    if flip:
        name += "_flip"
    if cache_key:
        name += "_" + hashlib.sha256(cache_key.encode("utf-8")).hexdigest()[:10]
    return name + ".safetensors"


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_latent_cache(dataset: "TrainDataset", encode: Callable[[torch.Tensor], torch.Tensor], *, mode: str,
                       cache_dir: Optional[Path], batch_size: int,
                       on_progress: Optional[Callable[[int, int], None]], cache_key: str) -> LatentCache:
    samples = dataset.samples
    keys: list[Key] = [(i, flip) for i, s in enumerate(samples) for flip in ((False, True) if s.flip else (False,))]
    keys.sort(key=lambda k: (samples[k[0]].bucket, k))
    total = len(keys)
    cache = LatentCache(mode)
    report = on_progress or (lambda done, total: None)

    pending = keys
    done = 0
    if mode == "disk":
        cache_dir.mkdir(parents=True, exist_ok=True)
        hashes: dict[int, str] = {}
        pending = []
        for key in keys:
            index, flip = key
            if index not in hashes:
                hashes[index] = file_hash(samples[index].entry.path)
            path = cache_dir / cache_file_name(hashes[index], samples[index].bucket, flip, cache_key)
            cache.files[key] = path
            if _is_valid(path, samples[index].bucket, flip, cache_key):
                done += 1
            else:
                pending.append(key)
    report(done, total)

    collected: dict[Size, list[torch.Tensor]] = {}
    for chunk in _chunks_by_bucket(pending, samples, max(1, int(batch_size))):
        decoded = {}
        for index, _ in chunk:
            if index not in decoded:
                decoded[index] = dataset.prepared_image(samples[index])
        pixels = to_tensor([decoded[i] for i, _ in chunk], [f for _, f in chunk])
        with torch.no_grad():
            latents = encode(pixels)
        if not isinstance(latents, torch.Tensor) or latents.shape[0] != len(chunk):
            raise ValueError(f"encode returned {getattr(latents, 'shape', type(latents))} for a batch of {len(chunk)}")
        latents = latents.detach().to("cpu").contiguous()
        bucket = samples[chunk[0][0]].bucket
        for row, key in enumerate(chunk):
            latent = latents[row].clone()
            if mode == "disk":
                metadata = {"format": CACHE_FORMAT, "bucket": f"{bucket[0]}x{bucket[1]}",
                            "flip": "1" if key[1] else "0", "cache_key": cache_key,
                            "source": str(samples[key[0]].entry.path)}
                atomic_write_bytes(cache.files[key], save({"latents": latent}, metadata=metadata))
            else:
                rows = collected.setdefault(bucket, [])
                cache.rows[key] = len(rows)
                cache.bucket_of[key] = bucket
                rows.append(latent)
        done += len(chunk)
        report(done, total)

    for bucket, rows in collected.items():
        cache.stacks[bucket] = torch.stack(rows)
    return cache


def _chunks_by_bucket(keys: list[Key], samples, batch_size: int):
    """Runs of at most batch_size keys that share a bucket (keys arrive sorted by bucket)."""
    chunk: list[Key] = []
    for key in keys:
        if chunk and (len(chunk) == batch_size or samples[chunk[0][0]].bucket != samples[key[0]].bucket):
            yield chunk
            chunk = []
        chunk.append(key)
    if chunk:
        yield chunk


def _is_valid(path: Path, bucket: Size, flip: bool, cache_key: str) -> bool:
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            return ("latents" in handle.keys() and meta.get("format") == CACHE_FORMAT
                    and meta.get("bucket") == f"{bucket[0]}x{bucket[1]}"
                    and meta.get("flip") == ("1" if flip else "0") and meta.get("cache_key") == cache_key)
    except Exception:  # a damaged file is simply encoded again
        return False
