"""What is in a LoRA file: architecture, network, dims, parts, training settings, tags, hashes.

Everything the keys say works without metadata; the ``ss_*`` training settings,
tags and trigger words come from kohya's metadata when the file has it (other
tools' metadata is listed as it is). The hashes are the ones sharing sites show:
sha256 of the whole file (AUTOMATIC1111's "AutoV2" is its first 10 hex digits)
and sha256 of the tensor bytes after the header (kohya's ``sshs_model_hash``).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from easytrain.lora_tools.files import LoraFile, part_of, read_lora
from easytrain.lora_tools.identify import LoraArch, identify

PART_LABELS = {"lora_unet": "UNet", "lora_te": "text encoder", "lora_te1": "TE1 (CLIP-L)",
               "lora_te2": "TE2 (bigG)"}
# ss_* keys shown as training settings, in this order, with their labels
SETTINGS = (
    ("ss_output_name", "output name"), ("ss_sd_model_name", "base model"), ("ss_network_module", "network module"),
    ("ss_network_args", "network args"), ("ss_optimizer", "optimizer"), ("ss_learning_rate", "learning rate"),
    ("ss_unet_lr", "UNet lr"), ("ss_text_encoder_lr", "text encoder lr"), ("ss_lr_scheduler", "scheduler"),
    ("ss_lr_warmup_steps", "warmup steps"), ("ss_steps", "steps"), ("ss_max_train_steps", "max steps"),
    ("ss_epoch", "epoch"), ("ss_num_epochs", "epochs"), ("ss_batch_size_per_device", "batch size"),
    ("ss_resolution", "resolution"), ("ss_clip_skip", "clip skip"), ("ss_num_train_images", "training images"),
    ("ss_num_reg_images", "regularization images"), ("ss_mixed_precision", "mixed precision"),
    ("ss_min_snr_gamma", "min SNR gamma"), ("ss_noise_offset", "noise offset"), ("ss_seed", "seed"),
    ("ss_training_comment", "comment"),
)
TOP_TAGS = 15
W = 23  # the label column of the report


@dataclass
class PartInfo:
    label: str
    modules: int
    dims: Counter            # rank -> count of modules
    alphas: Counter          # alpha -> count (None: no alpha)


@dataclass
class LoraInfo:
    path: Path
    size: int
    arch: LoraArch
    network_type: str
    dtype: str
    parts: dict[str, PartInfo]
    settings: list[tuple[str, str]]
    dataset_dirs: dict[str, dict]
    top_tags: list[tuple[str, int]]
    trigger_words: list[str]
    sha256: str
    model_hash: str
    stored_model_hash: str | None
    other_metadata: dict[str, str] = field(default_factory=dict)

    @property
    def autov2(self) -> str:
        return self.sha256[:10]


def hashes(path: Path) -> tuple[str, str]:
    """(sha256 of the file, sha256 of the bytes after the header), reading the file once."""
    whole, tensors = hashlib.sha256(), hashlib.sha256()
    with open(path, "rb") as fh:
        raw_len = fh.read(8)
        (length,) = struct.unpack("<Q", raw_len)
        header = fh.read(length)
        whole.update(raw_len + header)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            whole.update(chunk)
            tensors.update(chunk)
    return whole.hexdigest(), tensors.hexdigest()


def _parts(lora: LoraFile) -> dict[str, PartInfo]:
    parts: dict[str, PartInfo] = {}
    for name, module in sorted(lora.modules.items()):
        prefix = part_of(name)
        info = parts.setdefault(prefix, PartInfo(PART_LABELS.get(prefix, prefix), 0, Counter(), Counter()))
        info.modules += 1
        info.dims[module.rank] += 1
        info.alphas[module.alpha] += 1
    return parts


def _tag_frequency(metadata: dict[str, str]) -> dict[str, dict[str, int]]:
    try:
        value = json.loads(metadata.get("ss_tag_frequency", "") or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def tags_and_triggers(metadata: dict[str, str], top: int = TOP_TAGS) -> tuple[list[tuple[str, int]], list[str]]:
    """The most frequent tags over all folders, and the likely trigger words.

    A trigger word is a tag that is in (nearly) every caption of a folder: kohya
    records per folder how many captions carry each tag, and ``ss_dataset_dirs``
    how many images the folder has. Without image counts, the folder's most
    frequent tag counts when it is in at least 90% of the folder's top count.
    """
    frequency = _tag_frequency(metadata)
    try:
        dirs = json.loads(metadata.get("ss_dataset_dirs", "") or "{}")
    except json.JSONDecodeError:
        dirs = {}
    totals: Counter = Counter()
    triggers: list[str] = []
    for folder, tags in frequency.items():
        if not isinstance(tags, dict):
            continue
        counts = {str(t).strip(): int(c) for t, c in tags.items() if str(t).strip() and isinstance(c, (int, float))}
        totals.update(counts)
        images = dirs.get(folder, {}).get("img_count") if isinstance(dirs.get(folder), dict) else None
        if not counts:
            continue
        reference = images if isinstance(images, int) and images > 0 else max(counts.values())
        for tag, count in sorted(counts.items(), key=lambda kv: -kv[1]):
            if count >= 0.9 * reference and tag not in triggers:
                triggers.append(tag)
    # a tag in every caption of every folder is the likeliest trigger; several such tags keep their order
    return totals.most_common(top), triggers[:5]


def inspect_lora(path: str | Path) -> LoraInfo:
    lora = read_lora(path)
    md = lora.metadata
    settings = [(label, md[key]) for key, label in SETTINGS if md.get(key)]
    try:
        dirs = json.loads(md.get("ss_dataset_dirs", "") or "{}")
    except json.JSONDecodeError:
        dirs = {}
    top, triggers = tags_and_triggers(md)
    sha, model_hash = hashes(lora.path)
    shown = {key for key, _ in SETTINGS} | {"ss_tag_frequency", "ss_dataset_dirs", "sshs_model_hash"}
    other = {k: v for k, v in md.items() if k not in shown and not k.startswith("ss_")}
    return LoraInfo(
        path=lora.path, size=lora.path.stat().st_size, arch=identify(lora), network_type=lora.network_type,
        dtype=str(lora.dtype).removeprefix("torch."), parts=_parts(lora), settings=settings,
        dataset_dirs=dirs if isinstance(dirs, dict) else {}, top_tags=top, trigger_words=triggers,
        sha256=sha, model_hash=model_hash, stored_model_hash=md.get("sshs_model_hash"), other_metadata=other,
    )


def _counter(values: Counter, what: str) -> str:
    if not values:
        return "none"
    if len(values) == 1:
        (value, _), = values.items()
        return "none (scale 1)" if value is None and what == "alpha" else f"{value:g}" if isinstance(value, float) \
            else str(value)
    return ", ".join(f"{'none' if v is None else (f'{v:g}' if isinstance(v, float) else v)} ({n} modules)"
                     for v, n in sorted(values.items(), key=lambda kv: -kv[1]))


def render(info: LoraInfo) -> list[str]:
    """The report as lines of plain text."""
    lines = [f"{info.path.name}  ({info.size / 2**20:.1f} MiB, {info.dtype})",
             f"  {'architecture':<{W}}{info.arch.label} ({info.arch.evidence})",
             f"  {'network':<{W}}{info.network_type}, {sum(p.modules for p in info.parts.values())} modules"]
    for prefix, part in info.parts.items():
        lines.append(f"  {part.label:<{W}}{part.modules} modules, dim {_counter(part.dims, 'dim')}, "
                     f"alpha {_counter(part.alphas, 'alpha')}")
    if info.settings:
        lines.append("training")
        lines += [f"  {label:<{W}}{value}" for label, value in info.settings]
    if info.dataset_dirs:
        lines.append("dataset folders")
        for folder, values in info.dataset_dirs.items():
            if isinstance(values, dict):
                lines.append(f"  {folder}: {values.get('img_count', '?')} images x {values.get('n_repeats', '?')} repeats")
    if info.top_tags:
        lines.append(f"{'top tags':<{W + 2}}" + ", ".join(f"{tag} ({count})" for tag, count in info.top_tags))
        lines.append(f"{'trigger words':<{W + 2}}" + (", ".join(info.trigger_words) or "none stands out"))
    elif not info.settings:
        lines.append(f"{'metadata':<{W + 2}}none from kohya's trainer: the keys above are all the file says")
    if info.other_metadata:
        lines.append("other metadata")
        for key, value in sorted(info.other_metadata.items()):
            value = value if len(value) <= 70 else value[:67] + "..."
            lines.append(f"  {key}: {value}")
    lines.append("hashes")
    lines.append(f"  {'sha256':<{W}}{info.sha256}")
    lines.append(f"  {'AutoV2':<{W}}{info.autov2}")
    check = ""
    if info.stored_model_hash:
        check = "  (matches the file's sshs_model_hash)" if info.stored_model_hash == info.model_hash \
            else f"  (the file's sshs_model_hash says {info.stored_model_hash}: the tensors were changed since)"
    lines.append(f"  {'model hash':<{W}}{info.model_hash}{check}")
    return lines
