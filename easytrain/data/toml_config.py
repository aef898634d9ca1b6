"""A kohya dataset TOML (`[general]`, `[[datasets]]`, `[[datasets.subsets]]`) as scans.

Settings cascade as in kohya: a subset's own value, else its dataset's, else
`[general]`'s. Every problem (unknown key, wrong type, missing folder) is
collected and reported at once, each naming the file, the section and the key.
Stdlib + PIL only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from easytrain.data.buckets import BucketSettings
from easytrain.data.scan import DatasetScan, SubsetScan, UnreadableImage, normalise_extension, scan_subset
from easytrain.errors import UserError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

# What a subset may set (also allowed higher up, as defaults for its subsets).
SUBSET_KEYS = {
    "num_repeats": int, "class_tokens": str, "caption_extension": str, "shuffle_caption": bool,
    "keep_tokens": int, "flip_aug": bool, "keep_tokens_separator": str, "caption_dropout_rate": float,
    "caption_dropout_every_n_epochs": int, "caption_tag_dropout_rate": float, "random_crop": bool,
    "color_aug": bool, "alpha_mask": bool,
}
# Per-subset settings the scan passes on to the SubsetScan as they are (None: the run's setting).
PASSED_THROUGH = ("keep_tokens_separator", "caption_dropout_rate", "caption_dropout_every_n_epochs",
                  "caption_tag_dropout_rate", "random_crop", "color_aug")
SUBSET_ONLY_KEYS = {"image_dir": str, "is_reg": bool, "conditioning_data_dir": str}
DATASET_KEYS = {
    "resolution": "resolution", "batch_size": int, "enable_bucket": bool, "min_bucket_reso": int,
    "max_bucket_reso": int, "bucket_reso_steps": int, "bucket_no_upscale": bool,
    "validation_split": float, "validation_seed": int,
}
# kohya options that easytrain does not implement: named as such rather than as typos.
KOHYA_UNSUPPORTED = {
    "face_crop_aug_range", "secondary_separator", "caption_separator", "enable_wildcard", "token_warmup_min",
    "token_warmup_step", "caption_prefix", "caption_suffix", "custom_attributes", "resize_interpolation",
    "cache_info", "metadata_file", "network_multiplier",
}


def scan_dataset_toml(path, default_caption_extension: str = ".txt", *,
                      alpha_mask: bool = False) -> tuple[DatasetScan, Optional[DatasetScan]]:
    """(training scan, regularization scan or None) from a kohya dataset TOML.

    ``alpha_mask`` is the run's setting, used where the TOML does not set its own.
    """
    toml_path = Path(path).expanduser()
    if not toml_path.is_file():
        raise UserError(f"{toml_path}: the dataset config file does not exist")
    config = _load(toml_path)
    problems: list[str] = []

    for key in config:
        if key not in ("general", "datasets"):
            problems.append(_unknown(toml_path, "top level", key, "[general] and [[datasets]]"))
    general = _table(config.get("general", {}), toml_path, "[general]", problems)
    _check_keys(general, {**DATASET_KEYS, **SUBSET_KEYS}, toml_path, "[general]", problems)

    datasets = config.get("datasets", [])
    if not isinstance(datasets, list) or not datasets:
        problems.append(f"{toml_path}: needs at least one [[datasets]] section with [[datasets.subsets]]")
        datasets = []

    dataset_options: Optional[dict] = None
    subset_specs: list[dict] = []
    for d_index, raw_dataset in enumerate(datasets):
        section = f"[[datasets]] #{d_index + 1}"
        dataset = _table(raw_dataset, toml_path, section, problems)
        _check_keys(dataset, {**DATASET_KEYS, **SUBSET_KEYS, "subsets": list}, toml_path, section, problems)
        options = {key: dataset.get(key, general.get(key)) for key in DATASET_KEYS
                   if key in dataset or key in general}
        if dataset_options is None:
            dataset_options = options
        elif options != dataset_options:
            problems.append(
                f"{toml_path}: {section} has other resolution/batch/bucket settings than [[datasets]] #1; "
                "easytrain trains one dataset at a time: put all subsets under one [[datasets]] or give "
                "them the same settings")
        subsets = dataset.get("subsets", [])
        if not isinstance(subsets, list) or not subsets:
            problems.append(f"{toml_path}: {section} has no [[datasets.subsets]] (each needs an image_dir)")
            continue
        for s_index, raw_subset in enumerate(subsets):
            subsection = f"{section} [[datasets.subsets]] #{s_index + 1}"
            subset = _table(raw_subset, toml_path, subsection, problems)
            _check_keys(subset, {**SUBSET_KEYS, **SUBSET_ONLY_KEYS}, toml_path, subsection, problems)
            merged = {**{k: general[k] for k in SUBSET_KEYS if k in general},
                      **{k: dataset[k] for k in SUBSET_KEYS if k in dataset}, **subset}
            spec = _subset_spec({"alpha_mask": alpha_mask, **merged}, toml_path, subsection, problems,
                                default_caption_extension)
            if spec is not None:
                subset_specs.append(spec)

    if problems:
        raise UserError(f"{toml_path}: the dataset config has problems", problems=problems)
    options = _normalised_options(dataset_options or {})
    train = _scan_subsets(toml_path, [s for s in subset_specs if not s["is_reg"]], options, is_reg=False)
    reg_specs = [s for s in subset_specs if s["is_reg"]]
    reg = _scan_subsets(toml_path, reg_specs, options, is_reg=True) if reg_specs else None
    return train, reg


def _load(path: Path) -> dict:
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        if tomllib is not None:
            return tomllib.loads(text)
        import toml

        return toml.loads(text)
    except Exception as exc:  # the parser's message carries the line and column
        raise UserError(f"{path}: not valid TOML ({exc})") from None


def _table(value: Any, path: Path, section: str, problems: list[str]) -> dict:
    if isinstance(value, dict):
        return value
    problems.append(f"{path}: {section} must be a table of settings, got {type(value).__name__}")
    return {}


def _unknown(path: Path, section: str, key: str, allowed: str) -> str:
    if key in KOHYA_UNSUPPORTED:
        return f"{path}: {section}: '{key}' is a kohya option easytrain does not support; remove it"
    return f"{path}: {section}: unknown key '{key}' (allowed: {allowed})"


def _check_keys(table: dict, schema: dict, path: Path, section: str, problems: list[str]) -> None:
    for key, value in table.items():
        if key not in schema:
            problems.append(_unknown(path, section, key, ", ".join(sorted(schema))))
            continue
        expected = schema[key]
        if expected == "resolution":
            ok = _is_int(value) or (isinstance(value, list) and len(value) == 2 and all(map(_is_int, value)))
            wanted = "an integer or [width, height]"
        elif expected is int:
            ok, wanted = _is_int(value), "an integer"
        elif expected is float:
            ok, wanted = _is_int(value) or isinstance(value, float), "a number"
        elif expected is bool:
            ok, wanted = isinstance(value, bool), "true or false"
        elif expected is str:
            ok, wanted = isinstance(value, str), "a string"
        else:
            ok, wanted = isinstance(value, expected), "a list of tables"
        if not ok:
            problems.append(f"{path}: {section}: '{key}' must be {wanted}, got {value!r}")
        elif key in LIMITED_LIKE_THE_ANSWERS:
            problem = _answers_limit(key, value)
            if problem:
                problems.append(f"{path}: {section}: '{key}' {problem}")


# Settings a TOML shares with the answers file: the same limits (a batch of 0 or a bucket side of
# 10^11 would fail, or loop for ages, only later).
LIMITED_LIKE_THE_ANSWERS = ("resolution", "batch_size", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                            "keep_tokens")


def _answers_limit(key: str, value: Any) -> Any:
    from easytrain import questions as Q

    for number in value if isinstance(value, list) else [value]:
        problem = Q.check_value(Q.BY_ID[key], number, {})
        if problem:
            return problem
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _subset_spec(merged: dict, path: Path, section: str, problems: list[str], default_ext: str) -> Optional[dict]:
    image_dir = merged.get("image_dir")
    if not isinstance(image_dir, str) or not image_dir:
        problems.append(f"{path}: {section}: 'image_dir' is required (the folder of this subset's images)")
        return None
    folder = Path(image_dir).expanduser()
    if not folder.is_absolute():
        folder = path.parent / folder
    if not folder.is_dir():
        problems.append(f"{path}: {section}: image_dir {folder} is not a folder")
        return None
    repeats = merged.get("num_repeats", 1)
    if not _is_int(repeats) or repeats < 1:
        problems.append(f"{path}: {section}: 'num_repeats' must be 1 or more, got {repeats!r}")
        return None
    rates = {key: merged[key] for key in ("caption_dropout_rate", "caption_tag_dropout_rate") if key in merged}
    for key, rate in rates.items():
        if not 0 <= rate <= 1:
            problems.append(f"{path}: {section}: '{key}' must be from 0 to 1, got {rate!r}")
            return None
    mask_dir = merged.get("conditioning_data_dir")
    if mask_dir:
        mask_dir = Path(mask_dir).expanduser()
        mask_dir = mask_dir if mask_dir.is_absolute() else path.parent / mask_dir
        if not mask_dir.is_dir():
            problems.append(f"{path}: {section}: conditioning_data_dir {mask_dir} is not a folder")
            return None
    keep_tokens = merged.get("keep_tokens")
    if _is_int(keep_tokens) and keep_tokens < 0:
        problems.append(f"{path}: {section}: 'keep_tokens' must be 0 or more, got {keep_tokens}")
        return None
    return {
        "folder": folder,
        "name": merged.get("class_tokens") or "",
        "repeats": repeats,
        "is_reg": bool(merged.get("is_reg", False)),
        "caption_extension": normalise_extension(merged.get("caption_extension", default_ext)),
        "shuffle_caption": merged.get("shuffle_caption"),
        "keep_tokens": keep_tokens,
        "flip_aug": merged.get("flip_aug"),
        "mask_dir": mask_dir or None,
        "alpha_mask": bool(merged.get("alpha_mask", False)),
        **{key: merged.get(key) for key in PASSED_THROUGH},
    }


def _normalised_options(options: dict) -> dict:
    out = dict(options)
    if "resolution" in out:
        value = out["resolution"]
        out["resolution"] = (value, value) if _is_int(value) else (value[0], value[1])
    return out


def _scan_subsets(toml_path: Path, specs: list[dict], options: dict, *, is_reg: bool) -> DatasetScan:
    subsets: list[SubsetScan] = []
    problems: list[str] = []
    warnings: list[str] = []
    unreadable: list[UnreadableImage] = []
    for spec in specs:
        subset, subset_warnings, subset_unreadable = scan_subset(
            spec["folder"], name=spec["name"], repeats=spec["repeats"], is_reg=is_reg,
            caption_extension=spec["caption_extension"], shuffle_caption=spec["shuffle_caption"],
            keep_tokens=spec["keep_tokens"], flip_aug=spec["flip_aug"], mask_dir=spec["mask_dir"],
            alpha_mask=spec["alpha_mask"], **{key: spec[key] for key in PASSED_THROUGH})
        subsets.append(subset)
        problems.extend(p for p in subset.problems if p not in subset_warnings)
        warnings.extend(subset_warnings)
        unreadable.extend(subset_unreadable)
    if not any(s.images for s in subsets):
        kind = "regularization" if is_reg else "training"
        problems.append(f"{toml_path}: no usable {kind} images in the subsets' image_dir folders")
    return DatasetScan(toml_path, tuple(subsets), tuple(problems), tuple(warnings), tuple(unreadable),
                       config_options=options)


def bucket_settings_from_config(base: BucketSettings, options: dict) -> BucketSettings:
    """`base` with the dataset TOML's resolution and bucket settings put in."""
    return BucketSettings(
        resolution=options.get("resolution", base.resolution),
        enable_bucket=options.get("enable_bucket", base.enable_bucket),
        min_reso=options.get("min_bucket_reso", base.min_reso),
        max_reso=options.get("max_bucket_reso", base.max_reso),
        step=options.get("bucket_reso_steps", base.step),
        no_upscale=options.get("bucket_no_upscale", base.no_upscale),
    )
