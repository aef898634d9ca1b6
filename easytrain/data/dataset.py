"""The training dataset: batches from one bucket each, captions, flips, masks, latents.

Everything random is a pure function of (seed, epoch, batch index), so a
resumed run sees exactly the batches an uninterrupted one would:
`epoch_batches(epoch, batch_size)[index:]` continues where it stopped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from easytrain.data.buckets import BucketSettings, Size, assign_bucket, count_epoch, epoch_repeats, make_buckets
from easytrain.data.augment import color_augment, crop_box_at, crop_fraction
from easytrain.data.captions import CaptionRules, process_caption, subset_caption_rules
from easytrain.data.latent_cache import LatentCache, build_latent_cache
from easytrain.data.masks import load_mask
from easytrain.data.pixels import load_rgb, mask_tensor, prepare, to_tensor
from easytrain.data.scan import CACHE_DIR_NAME, DatasetScan, ImageEntry
from easytrain.errors import UserError


@dataclass(frozen=True)
class Sample:
    """One image file as the dataset uses it."""
    entry: ImageEntry
    is_reg: bool
    repeats: int  # appearances per epoch (regularization: after balancing)
    bucket: Size
    resized: Size
    captions: CaptionRules
    flip: bool
    random_crop: bool = False
    color_aug: bool = False


@dataclass(frozen=True)
class BatchSpec:
    """Which samples make batch `index` of an epoch, and which of them are mirrored."""
    index: int
    bucket: Size  # (width, height)
    samples: tuple[int, ...]
    flips: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.samples)


@dataclass
class Batch:
    pixel_values: Optional[torch.Tensor]  # Bx3xHxW in [-1, 1], or None when latents are cached
    latents: Optional[torch.Tensor]  # as the encode function returned them, or None
    captions: list[str]
    loss_weights: torch.Tensor  # [B]: 1.0, or the prior loss weight for regularization images
    bucket: Size = (0, 0)
    # For size-conditioned models (SDXL): per image (height, width) before resizing,
    # and the (top, left) of the crop in the resized image.
    original_sizes: list[tuple[int, int]] = field(default_factory=list)
    crop_top_lefts: list[tuple[int, int]] = field(default_factory=list)
    # BxHxW in [0, 1] at pixel size (1 = the loss counts), or None when no image of the batch has a mask.
    masks: Optional[torch.Tensor] = None


class TrainDataset:
    def __init__(self, train_scan: DatasetScan, reg_scan: Optional[DatasetScan], settings: BucketSettings, *,
                 shuffle_captions: bool = False, keep_tokens: int = 0, flip_aug: bool = False,
                 prior_loss_weight: float = 1.0, seed: int = 42, caption_extension: str = ".txt",
                 keep_tokens_separator: str = "", caption_dropout_rate: float = 0.0,
                 caption_dropout_every_n_epochs: int = 0, caption_tag_dropout_rate: float = 0.0,
                 random_crop: bool = False, color_aug: bool = False):
        # caption_extension is already applied by the scans; accepted so callers can pass the answer through.
        if train_scan.total_images == 0:
            raise UserError(f"{train_scan.root}: no usable training images",
                            problems=list(train_scan.problems))
        self.train_scan = train_scan
        self.reg_scan = reg_scan
        self.settings = settings
        self.seed = int(seed)
        self.prior_loss_weight = float(prior_loss_weight)
        self.samples: list[Sample] = []
        self._latents: Optional[LatentCache] = None

        subset_of = {}
        for scan in (train_scan, reg_scan):
            for subset in (scan.subsets if scan is not None else ()):
                for image in subset.images:
                    subset_of[id(image)] = subset
        buckets = make_buckets(settings)
        for image, repeats in epoch_repeats(train_scan, reg_scan):
            subset = subset_of[id(image)]
            bucket, resized = assign_bucket(image.width, image.height, settings, buckets)

            def own(name, run_value):
                value = getattr(subset, name)
                return run_value if value is None else value

            rules = subset_caption_rules(
                subset, shuffle=shuffle_captions, keep_tokens=keep_tokens, keep_tokens_separator=keep_tokens_separator,
                dropout_rate=caption_dropout_rate, dropout_every_n_epochs=caption_dropout_every_n_epochs,
                tag_dropout_rate=caption_tag_dropout_rate)
            self.samples.append(Sample(
                entry=image, is_reg=subset.is_reg, repeats=repeats, bucket=bucket, resized=resized,
                captions=rules, flip=own("flip_aug", flip_aug), random_crop=own("random_crop", random_crop),
                color_aug=own("color_aug", color_aug),
            ))

    # ---- the epoch -------------------------------------------------------------------------

    def epoch_count(self, batch_size: int):
        """The plan's count of one epoch (buckets.count_epoch); epoch_batches matches it."""
        return count_epoch(self.train_scan, self.reg_scan, self.settings, batch_size)

    @property
    def images_per_epoch(self) -> int:
        return sum(s.repeats for s in self.samples)

    @property
    def captions_vary(self) -> bool:
        """Whether a caption can differ between epochs (shuffle or dropout): no caching of its encoding."""
        return any(s.captions.varies for s in self.samples)

    @property
    def pixels_vary(self) -> bool:
        """Whether an image's pixels differ between epochs (random crop, colour jitter): no latent cache."""
        return any(s.random_crop or s.color_aug for s in self.samples)

    @property
    def has_masks(self) -> bool:
        return any(s.entry.has_mask for s in self.samples)

    def epoch_batches(self, epoch: int, batch_size: int) -> list[BatchSpec]:
        """All batches of an epoch in training order; each from one bucket.

        Images are shuffled within their bucket and the batches are shuffled
        across buckets, from (seed, epoch) alone.
        """
        batch_size = max(1, int(batch_size))
        rng = random.Random(f"easytrain/batches/{self.seed}/{epoch}")
        by_bucket: dict[Size, list[int]] = {}
        for index, sample in enumerate(self.samples):
            by_bucket.setdefault(sample.bucket, []).extend([index] * sample.repeats)
        chunks: list[tuple[Size, list[int]]] = []
        for bucket in sorted(by_bucket):
            members = by_bucket[bucket]
            rng.shuffle(members)
            chunks.extend((bucket, members[i:i + batch_size]) for i in range(0, len(members), batch_size))
        rng.shuffle(chunks)
        batches = []
        for position, (bucket, members) in enumerate(chunks):
            flip_rng = random.Random(f"easytrain/flip/{self.seed}/{epoch}/{position}")
            flips = tuple(self.samples[m].flip and flip_rng.random() < 0.5 for m in members)
            batches.append(BatchSpec(position, bucket, tuple(members), flips))
        return batches

    # ---- loading -----------------------------------------------------------------------------

    def fixed_captions(self) -> list[str]:
        """Every sample's caption as trained, for a dataset whose captions do not vary (``captions_vary``)."""
        rng = random.Random(0)  # unused: nothing is shuffled or dropped
        return [process_caption(s.entry.caption, s.captions, 1, rng) for s in self.samples]

    def captions_for(self, spec: BatchSpec, epoch: int) -> list[str]:
        """The batch's captions as trained in ``epoch`` (1-based for dropout every N epochs, as kohya)."""
        rng = random.Random(f"easytrain/captions/{self.seed}/{epoch}/{spec.index}")
        return [process_caption(self.samples[m].entry.caption, self.samples[m].captions, epoch, rng)
                for m in spec.samples]

    def load_batch(self, spec: BatchSpec, epoch: int) -> Batch:
        samples = [self.samples[m] for m in spec.samples]
        weights = torch.tensor([self.prior_loss_weight if s.is_reg else 1.0 for s in samples],
                               dtype=torch.float32)
        captions = self.captions_for(spec, epoch)
        original_sizes = [(s.entry.height, s.entry.width) for s in samples]
        aug_rng = random.Random(f"easytrain/augment/{self.seed}/{epoch}/{spec.index}")
        fractions = [crop_fraction(aug_rng) if s.random_crop else None for s in samples]
        crops = []
        for sample, flip, fraction in zip(samples, spec.flips, fractions):
            left, top, right, _ = crop_box_at(sample.resized, sample.bucket, fraction)
            # a mirrored image's crop is measured from the other side, as kohya does
            crops.append((top, sample.resized[0] - right if flip else left))
        masks = self._masks(samples, list(spec.flips), fractions) if any(s.entry.has_mask for s in samples) else None
        if self._latents is not None:
            latents = self._latents.get(list(spec.samples), list(spec.flips))
            return Batch(None, latents, captions, weights, spec.bucket, original_sizes, crops, masks)
        images = [self.prepared_image(s, fraction) for s, fraction in zip(samples, fractions)]
        images = [color_augment(image, aug_rng) if s.color_aug else image for s, image in zip(samples, images)]
        return Batch(to_tensor(images, list(spec.flips)), None, captions, weights, spec.bucket,
                     original_sizes, crops, masks)

    @staticmethod
    def prepared_image(sample: Sample, crop_at: Optional[tuple[float, float]] = None):
        """The sample decoded, resized to cover its bucket and cropped (PIL, RGB); centre crop by default."""
        image = load_rgb(sample.entry.path)
        return prepare(image, sample.bucket, _planned(sample, image.size), crop_at)

    @staticmethod
    def _masks(samples: list[Sample], flips: list[bool], fractions: list) -> torch.Tensor:
        """The batch's loss masks, resized and cropped exactly as their images; all ones where there is none."""
        pictures = []
        for sample, fraction in zip(samples, fractions):
            entry = sample.entry
            if not entry.has_mask:
                pictures.append(None)
                continue
            mask = load_mask(entry.mask_path or entry.path, from_alpha=entry.mask_path is None)
            if entry.mask_path is not None and mask.size != (entry.width, entry.height):
                mask = mask.resize((entry.width, entry.height))  # a mask file of another size: stretch it over the image
            pictures.append(prepare(mask, sample.bucket, _planned(sample, mask.size), fraction))
        return mask_tensor(pictures, flips, samples[0].bucket)

    # ---- latent cache --------------------------------------------------------------------------

    def default_cache_dir(self) -> Path:
        root = self.train_scan.root
        return (root if root.is_dir() else root.parent) / CACHE_DIR_NAME

    def cache_latents(self, encode: Callable[[torch.Tensor], torch.Tensor], mode: str = "memory",
                      cache_dir: Optional[Path] = None, batch_size: int = 1,
                      on_progress: Optional[Callable[[int, int], None]] = None, *, cache_key: str = "") -> None:
        """Encode every image (both orientations when flipped) once; load_batch then returns latents.

        mode "memory" keeps them in RAM, stacked per bucket; "disk" keeps one
        safetensors file per image under cache_dir (default
        `<image folder>/.easytrain-cache/`), named by the image's content hash,
        bucket size, flip and `cache_key` (pass something naming the VAE, so a
        different base model does not reuse them). Unchanged images are not
        encoded again; files are written atomically.
        """
        if mode not in ("memory", "disk"):
            raise ValueError(f"cache mode must be 'memory' or 'disk', got {mode!r}")
        if mode == "disk" and cache_dir is None:
            cache_dir = self.default_cache_dir()
        self._latents = build_latent_cache(
            self, encode, mode=mode, cache_dir=Path(cache_dir) if cache_dir is not None else None,
            batch_size=batch_size, on_progress=on_progress, cache_key=cache_key)

    def drop_latent_cache(self) -> None:
        self._latents = None


def _planned(sample: Sample, decoded_size: Size) -> Optional[Size]:
    """The scan's resize, unless the decoded file has another size than its header said (an EXIF turn)."""
    return sample.resized if decoded_size == (sample.entry.width, sample.entry.height) else None
