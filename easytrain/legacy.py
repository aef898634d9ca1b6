"""Reading answers files from before easytrain.

Three families are in the wild: the popup-era scripts' JSON (keys such as
img_folder, net_dim, optimizer_type), the kohya_ss GUI's JSON (keys such as
train_data_dir, network_dim, lr_warmup in percent) and kohya sd-scripts' own
--config_file TOML (the command-line names, in any tables, network_args as
"key=value" strings). All are mapped to our keys here; values are coerced
where those tools wrote numbers as strings. Keys we cannot map are returned as
warnings, never silently dropped.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from easytrain import catalog
from easytrain.answers import SCHEMA_VERSION
from easytrain.questions import KEYS, OPTIMIZERS

POPUP_MARKERS = ("img_folder", "net_dim", "base_model", "output_folder", "optimizer_type", "num_epochs",
                 "train_resolution", "change_output_name")
KOHYA_MARKERS = ("pretrained_model_name_or_path", "train_data_dir", "output_dir", "LoRA_type",
                 "train_batch_size", "max_resolution", "lr_warmup")

# Keys that carried meaning only for the old tools' own machinery.
IGNORED_SILENTLY = {
    "save_json_folder", "load_json_path", "json_load_skip_list", "save_json_only", "multi_run_folder",
    "save_as", "save_model_as", "xformers", "mem_eff_attn", "num_workers", "persistent_workers",
    "max_data_loader_n_workers", "persistent_data_loader_workers", "network_module", "no_meta",
    "use_8bit_adam", "use_lion", "sort_tag_occurrence_alphabetically", "cache_latents_to_disk",
    "v_parameterization", "warmup_lr_ratio", "learning_rate", "text_only", "unet_only", "lyco",
    "network_args", "sample_every_n_epoch", "LoRA_type", "lr_warmup", "max_resolution",
    "network_train_unet_only", "network_train_text_encoder_only", "use_8bit_adam", *catalog.LEGACY_FLAGS,
    # easytrain caches the text encoders' outputs by itself whenever they are frozen and captions are fixed
    "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk",
    "gradient_acc_steps", "masked_loss", "dora_wd", "max_train_epochs", "optimizer_type", "resolution",
    "alpha_mask",
}
KNOWN_NETWORK_MODULES = ("networks.lora", "sd_scripts.networks.lora", "lycoris.kohya")
KNOWN_NETWORK_ARGS = ("conv_dim", "conv_alpha", "algo", "dora_wd")
# Marks a dict read from a kohya TOML (set by flatten_kohya_toml, removed before mapping).
TOML_SOURCE = "_easytrain_source"

# kohya's options of this issue: the same name and meaning in the kohya_ss GUI, kohya's TOML and ours.
_SHARED_KOHYA_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {}  # filled below the coercions

_OPTIMIZER_NAMES = {o.lower(): o for o in OPTIMIZERS}
_OPTIMIZER_NAMES.update({
    "dadaptation": "DAdaptAdam", "dadaptadam": "DAdaptAdam", "adafactor": "Adafactor",
    "sgdnesterov8bit": "SGDNesterov", "adamw": "AdamW", "adamw8bit": "AdamW8bit", "lion": "Lion",
    "lion8bit": "Lion8bit", "prodigy": "Prodigy", "sgdnesterov": "SGDNesterov",
})


def detect_format(data: Mapping[str, Any]) -> Optional[str]:
    if "schema_version" in data:
        return "easytrain"
    if any(k in data for k in KOHYA_MARKERS):
        return "kohya_ss"
    if any(k in data for k in POPUP_MARKERS):
        return "popup"
    return None


def flatten_kohya_toml(config: Mapping[str, Any]) -> dict[str, Any]:
    """kohya's --config_file TOML as one flat dict: the keys of every table, as sd-scripts reads it."""
    flat: dict[str, Any] = {TOML_SOURCE: "kohya_toml"}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def import_legacy(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Map a popup-era, kohya_ss GUI or kohya TOML dict to ours. Returns (our dict, warnings)."""
    from_toml = data.get(TOML_SOURCE) == "kohya_toml"
    data = {k: v for k, v in data.items() if k != TOML_SOURCE}
    fmt = "kohya_ss" if from_toml else detect_format(data)
    if fmt == "kohya_ss":
        out, used = _from_kohya_ss(data)
        label = "kohya TOML" if from_toml else "kohya_ss GUI"
    elif fmt == "popup":
        out, used = _from_popup(data)
        label = "popup-era"
    else:
        # Not recognisably legacy: validate as ours so unknown keys are reported by name.
        return {"schema_version": SCHEMA_VERSION, **data}, []
    warnings = [f"read as a {label} answers file; saving writes the easytrain format"]
    unmapped = sorted(k for k in data if k not in used and k not in IGNORED_SILENTLY and k not in KEYS)
    unmapped += sorted(f"network_args {k}" for k in _network_args(data.get("network_args"))
                       if k not in KNOWN_NETWORK_ARGS and k not in BLOCK_KEYS)
    module = data.get("network_module")
    if module and str(module) not in KNOWN_NETWORK_MODULES:
        unmapped.append(f"network_module {module} (trained as {out.get('network_type', 'LoRA')})")
    if unmapped:
        warnings.append("ignored keys with no easytrain equivalent: " + ", ".join(unmapped))
    out = {k: v for k, v in out.items() if v is not None or k in ("height", "dataset_config", "network_weights")}
    return {"schema_version": SCHEMA_VERSION, **out}, warnings


# ---------------------------------------------------------------- coercion

def _num(value: Any) -> Any:
    """'1e-4' -> 0.0001, '10' -> 10; anything else unchanged (validation reports it)."""
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return None
        try:
            number = float(text)
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    return value


def _int(value: Any) -> Any:
    value = _num(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _float(value: Any) -> Any:
    value = _num(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _bool(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def _text(value: Any) -> Any:
    return value if value is None else str(value) if isinstance(value, (int, float)) else value


def _optimizer(value: Any) -> Any:
    if isinstance(value, str):
        return _OPTIMIZER_NAMES.get(value.strip().lower(), value)
    return value


def _optimizer_args(value: Any) -> Any:
    """Popup: {'weight_decay': '0.1', 'betas': '0.9,0.99'}; kohya_ss: 'weight_decay=0.1 betas=0.9,0.99'."""
    if value in (None, "", []):
        return {}
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    if isinstance(value, str):
        from easytrain.questions import parse_mapping

        try:
            return parse_mapping(value)
        except ValueError:
            return value
    if isinstance(value, Mapping):
        from easytrain.questions import parse_scalar_or_list

        return {k: parse_scalar_or_list(v.strip()) if isinstance(v, str) else v for k, v in value.items()}
    return value


def _precision(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("fp32", "float32", "float"):
        return "float"
    return value


def _mixed(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("fp32", "float", "no", "none"):
        return "no"
    return value


def _blocks(value: Any) -> Any:
    """Block-wise settings: kohya wrote them as text ("1,1,0.5") or, in TOML/JSON, as a list of numbers."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value if value is None else str(value)


def _network_args(value: Any) -> dict[str, Any]:
    """--network_args as a dict: a TOML/GUI list of "key=value" strings, a string of them, or a dict."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, (list, tuple)):
        return {}
    found = {}
    for item in value:
        key, sep, text = str(item).partition("=")
        if sep:
            found[key.strip()] = text.strip()
    return found


_SHARED_KOHYA_KEYS.update({
    "gradient_accumulation_steps": ("gradient_accumulation_steps", _int),
    "caption_dropout_rate": ("caption_dropout_rate", _float),
    "caption_dropout_every_n_epochs": ("caption_dropout_every_n_epochs", _int),
    "caption_tag_dropout_rate": ("caption_tag_dropout_rate", _float),
    "keep_tokens_separator": ("keep_tokens_separator", _text),
    "random_crop": ("random_crop", _bool),
    "color_aug": ("color_aug", _bool),
    "multires_noise_iterations": ("multires_noise_iterations", _int),
    "multires_noise_discount": ("multires_noise_discount", _float),
    "adaptive_noise_scale": ("adaptive_noise_scale", _float),
    "ip_noise_gamma": ("ip_noise_gamma", _float),
    "zero_terminal_snr": ("zero_terminal_snr", _bool),
    "scale_v_pred_loss_like_noise_pred": ("scale_v_pred_loss_like_noise_pred", _bool),
    "debiased_estimation_loss": ("debiased_estimation_loss", _bool),
    "loss_type": ("loss_type", _text),
    "huber_schedule": ("huber_schedule", _text),
    "huber_c": ("huber_c", _float),
    "huber_scale": ("huber_scale", _float),
    "down_lr_weight": ("down_lr_weight", _blocks),
    "mid_lr_weight": ("mid_lr_weight", _blocks),
    "up_lr_weight": ("up_lr_weight", _blocks),
    "block_lr_zero_threshold": ("block_lr_zero_threshold", _float),
    "block_dims": ("block_dims", _blocks),
    "block_alphas": ("block_alphas", _blocks),
    "conv_block_dims": ("conv_block_dims", _blocks),
    "conv_block_alphas": ("conv_block_alphas", _blocks),
})
BLOCK_KEYS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_dims",
              "block_alphas", "conv_block_dims", "conv_block_alphas")


def _apply_shared(out: dict, d: Mapping[str, Any], used: set[str]) -> None:
    """kohya's options that keep their name: copied with their type; empty text means "not set"."""
    for old, (new, conv) in _SHARED_KOHYA_KEYS.items():
        if old in d and d[old] not in (None, ""):
            out[new] = conv(d[old])
            used.add(old)
    # kohya wrote "0" for "off" where we have no off value: those keep our default.
    for key in ("adaptive_noise_scale",):
        if out.get(key) == 0:
            out.pop(key)
    if _bool(d.get("alpha_mask")) is True:
        out["alpha_mask"] = True
    if _bool(d.get("dora_wd")) is True:
        out["dora"] = True


def _apply_v_parameterization(out: dict, v2: Any, v_param: Any) -> None:
    """v2 + v_parameterization is the SD2 768-v architecture; v_parameterization alone, a v-pred fine-tune."""
    if v_param is True and v2 is not True:
        out["v_parameterization"] = True


# ---------------------------------------------------------------- popup era

_POPUP_DIRECT: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "base_model": ("base_model", _text),
    "img_folder": ("image_folder", _text),
    "output_folder": ("output_folder", _text),
    "change_output_name": ("output_name", _text),
    "net_dim": ("network_dim", _int),
    "alpha": ("network_alpha", _float),
    "scheduler": ("scheduler", _text),
    "cosine_restarts": ("scheduler_restarts", _int),
    "scheduler_power": ("scheduler_power", _float),
    "unet_lr": ("unet_lr", _float),
    "text_encoder_lr": ("text_encoder_lr", _float),
    "train_resolution": ("resolution", _int),
    "height_resolution": ("height", _int),
    "batch_size": ("batch_size", _int),
    "num_epochs": ("epochs", _int),
    "shuffle_captions": ("shuffle_captions", _bool),
    "keep_tokens": ("keep_tokens", _int),
    "flip_aug": ("flip_aug", _bool),
    "clip_skip": ("clip_skip", _int),
    "mixed_precision": ("mixed_precision", _mixed),
    "save_precision": ("save_precision", _precision),
    "min_snr_gamma": ("min_snr_gamma", _float),
    "training_comment": ("comment", _text),
    "bucket_no_upscale": ("bucket_no_upscale", _bool),
    "buckets": ("enable_bucket", _bool),
    "min_bucket_resolution": ("min_bucket_reso", _int),
    "max_bucket_resolution": ("max_bucket_reso", _int),
    "bucket_reso_steps": ("bucket_reso_steps", _int),
    "test_seed": ("seed", _int),
    "seed": ("seed", _int),
    "gradient_checkpointing": ("gradient_checkpointing", _bool),
    "noise_offset": ("noise_offset", _float),
    "prior_loss_weight": ("prior_loss_weight", _float),
    "max_grad_norm": ("max_grad_norm", _float),
    "save_state": ("save_state", _bool),
    "caption_extension": ("caption_extension", _text),
    "max_clip_token_length": ("max_token_length", _int),
    "lora_model_for_resume": ("network_weights", _text),
    "vae": ("vae", _text),
    "optimizer_type": ("optimizer", _optimizer),
    "optimizer_args": ("optimizer_args", _optimizer_args),
    "sample_every_n_epochs": ("sample_every_n_epochs", _int),
    "save_every_n_steps": ("save_every_n_steps", _int),
    "sample_every_n_steps": ("sample_every_n_steps", _int),
}


def _from_popup(d: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    out: dict[str, Any] = {}
    used: set[str] = set()
    for old, (new, conv) in _POPUP_DIRECT.items():
        if old in d and d[old] is not None:
            out[new] = conv(d[old])
            used.add(old)
    # The popup scripts wrote the per-epoch save under two names over time.
    for old in ("save_every_n_epochs", "save_at_n_epochs"):
        if old in d:
            used.add(old)
            value = _int(d[old])
            out["save_every_n_epochs"] = 0 if value in (None, 0) or (isinstance(value, int) and value >= 999999) else value
            break
    if "sample_every_n_epoch" in d and d["sample_every_n_epoch"] is not None:  # the popup era's typo
        out["sample_every_n_epochs"] = _int(d["sample_every_n_epoch"])
    _apply_learning_rate(out, d)
    if d.get("use_8bit_adam") and "optimizer_type" not in d:
        out["optimizer"] = "AdamW8bit"
    elif "optimizer" not in out:
        out["optimizer"] = "AdamW8bit" if d.get("use_8bit_adam") else ("Lion" if d.get("use_lion") else "AdamW")
    if "warmup_lr_ratio" in d:
        out["warmup_ratio"] = _float(d["warmup_lr_ratio"]) or 0.0
    _apply_length(out, _int(d.get("max_steps")))
    _apply_parts(out, _bool(d.get("unet_only")), _bool(d.get("text_only")))
    _apply_arch(out, d)
    _apply_reg(out, d.get("reg_img_folder"))
    used.update({"max_steps", "v2", "reg_img_folder", "sample_prompts", "tag_occurrence_txt_file"})
    if "tag_occurrence_txt_file" in d:
        if not _bool(d["tag_occurrence_txt_file"]):
            out["tag_summary"] = "none"
        else:
            out["tag_summary"] = "alphabetical" if _bool(d.get("sort_tag_occurrence_alphabetically")) else "by_count"
    _apply_cache(out, d.get("cache_latents"), d.get("cache_latents_to_disk"))
    _apply_samples(out, d.get("sample_prompts"))
    network_args = d.get("network_args") if isinstance(d.get("network_args"), Mapping) else {}
    _apply_network(out, algo=network_args.get("algo") if d.get("lyco") or network_args.get("algo") else None,
                   conv_dim=network_args.get("conv_dim"), conv_alpha=network_args.get("conv_alpha"))
    _apply_shared(out, {**d, **{k: v for k, v in network_args.items() if k in BLOCK_KEYS}}, used)
    steps = _int(d.get("gradient_acc_steps"))
    if isinstance(steps, int) and steps > 1 and _bool(d.get("gradient_checkpointing")) is True:
        out["gradient_accumulation_steps"] = steps  # the popup scripts passed it on only with checkpointing
    _apply_v_parameterization(out, _bool(d.get("v2")), _bool(d.get("v_parameterization")))
    _apply_realistic(out)
    return out, used


# ---------------------------------------------------------------- kohya_ss GUI

_KOHYA_DIRECT: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "pretrained_model_name_or_path": ("base_model", _text),
    "train_data_dir": ("image_folder", _text),
    "output_dir": ("output_folder", _text),
    "output_name": ("output_name", _text),
    "network_dim": ("network_dim", _int),
    "network_alpha": ("network_alpha", _float),
    "lr_scheduler": ("scheduler", _text),
    "lr_scheduler_num_cycles": ("scheduler_restarts", _int),
    "lr_scheduler_power": ("scheduler_power", _float),
    "unet_lr": ("unet_lr", _float),
    "text_encoder_lr": ("text_encoder_lr", _float),
    "train_batch_size": ("batch_size", _int),
    "epoch": ("epochs", _int),
    "save_every_n_epochs": ("save_every_n_epochs", _int),
    "mixed_precision": ("mixed_precision", _mixed),
    "save_precision": ("save_precision", _precision),
    "seed": ("seed", _int),
    "caption_extension": ("caption_extension", _text),
    "enable_bucket": ("enable_bucket", _bool),
    "min_bucket_reso": ("min_bucket_reso", _int),
    "max_bucket_reso": ("max_bucket_reso", _int),
    "bucket_reso_steps": ("bucket_reso_steps", _int),
    "bucket_no_upscale": ("bucket_no_upscale", _bool),
    "gradient_checkpointing": ("gradient_checkpointing", _bool),
    "shuffle_caption": ("shuffle_captions", _bool),
    "keep_tokens": ("keep_tokens", _int),
    "flip_aug": ("flip_aug", _bool),
    "clip_skip": ("clip_skip", _int),
    "optimizer": ("optimizer", _optimizer),
    "optimizer_args": ("optimizer_args", _optimizer_args),
    "training_comment": ("comment", _text),
    "min_snr_gamma": ("min_snr_gamma", _float),
    "noise_offset": ("noise_offset", _float),
    "max_token_length": ("max_token_length", _int),
    "prior_loss_weight": ("prior_loss_weight", _float),
    "max_grad_norm": ("max_grad_norm", _float),
    "save_state": ("save_state", _bool),
    "network_weights": ("network_weights", _text),
    "vae": ("vae", _text),
    "sample_every_n_epochs": ("sample_every_n_epochs", _int),
    "dataset_config": ("dataset_config", _text),
    "save_every_n_steps": ("save_every_n_steps", _int),
    "sample_every_n_steps": ("sample_every_n_steps", _int),
    "validation_split": ("validation_split", _float),
    "validation_seed": ("validation_seed", _int),
    "validate_every_n_steps": ("validate_every_n_steps", _int),
    # kohya's TOML spells these as the command line does
    "max_train_epochs": ("epochs", _int),
    "optimizer_type": ("optimizer", _optimizer),
}


def _from_kohya_ss(d: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    out: dict[str, Any] = {}
    used: set[str] = set()
    for old, (new, conv) in _KOHYA_DIRECT.items():
        if old in d and d[old] not in (None, ""):
            out[new] = conv(d[old])
            used.add(old)
    for key in ("network_weights", "dataset_config"):
        if out.get(key) in ("",):
            out[key] = None
    _apply_learning_rate(out, d)
    resolution = d.get("max_resolution", d.get("resolution"))
    if isinstance(resolution, (int, float)) and not isinstance(resolution, bool):
        resolution = str(int(resolution))
    if isinstance(resolution, str) and resolution.strip():
        parts = [p.strip() for p in resolution.split(",")]
        try:
            width = int(parts[0])
            height = int(parts[1]) if len(parts) > 1 else width
        except ValueError:
            out["resolution"] = resolution  # reported by validation
        else:
            out["resolution"] = width
            out["height"] = None if height == width else height
    warmup_percent = _float(d.get("lr_warmup"))
    if isinstance(warmup_percent, float):
        out["warmup_ratio"] = warmup_percent / 100.0
    max_steps = _int(d.get("max_train_steps"))
    if _apply_warmup_steps(out, _num(d.get("lr_warmup_steps")), max_steps):
        used.add("lr_warmup_steps")
    _apply_length(out, max_steps if isinstance(max_steps, int) and max_steps > 0 else None)
    _apply_parts(out, _bool(d.get("network_train_unet_only")), _bool(d.get("network_train_text_encoder_only")))
    _apply_arch(out, d)
    _apply_reg(out, d.get("reg_data_dir"))
    _apply_cache(out, d.get("cache_latents"), d.get("cache_latents_to_disk"))
    _apply_samples(out, d.get("sample_prompts"))
    network_args = _network_args(d.get("network_args"))
    lora_type = str(d.get("LoRA_type") or "Standard").lower()
    algo = "loha" if "loha" in lora_type else "lokr" if "lokr" in lora_type else "locon" if "locon" in lora_type else None
    if "LoRA_type" not in d and network_args.get("algo"):
        algo = str(network_args["algo"]).lower()        # a TOML: network_module lycoris.kohya, algo=...
    conv_dim = d.get("conv_dim", network_args.get("conv_dim"))
    _apply_network(out, algo=algo, conv_dim=conv_dim, conv_alpha=d.get("conv_alpha", network_args.get("conv_alpha")),
                   conv_means_locon="LoRA_type" not in d)
    _apply_shared(out, {**{k: v for k, v in network_args.items() if k in BLOCK_KEYS or k == "dora_wd"}, **d}, used)
    _apply_v_parameterization(out, _bool(d.get("v2")), _bool(d.get("v_parameterization")))
    _apply_realistic(out)
    _apply_logging(out, d.get("log_with"), d.get("logging_dir"))
    used.update({"learning_rate", "max_train_steps", "v2", "reg_data_dir", "cache_latents",
                 "sample_prompts", "conv_dim", "conv_alpha", "log_with", "logging_dir"})
    return out, used


# ---------------------------------------------------------------- shared rules

def _apply_learning_rate(out: dict, d: Mapping[str, Any]) -> None:
    """Both old tools passed a UNet/TE rate only when set and non-zero; otherwise the base rate applied."""
    lr = _float(d.get("learning_rate"))
    if not isinstance(lr, float):
        return
    for key in ("unet_lr", "text_encoder_lr"):
        if _float(d.get(key)) in (None, 0.0):
            out[key] = lr


def _apply_length(out: dict, max_steps: Any) -> None:
    if isinstance(max_steps, int) and max_steps > 0:
        out["length_by"] = "steps"
        out["max_steps"] = max_steps
        out.pop("epochs", None)
    else:
        out["length_by"] = "epochs"


def _apply_warmup_steps(out: dict, warmup: Any, max_steps: Any) -> bool:
    """kohya's lr_warmup_steps: a count of steps, or (newer sd-scripts) a ratio below 1. False: not mapped.

    A count becomes a ratio only when the total (max_train_steps) is known.
    """
    if isinstance(warmup, float) and 0 <= warmup < 1:
        out["warmup_ratio"] = warmup
    elif isinstance(warmup, int) and warmup > 0 and isinstance(max_steps, int) and max_steps > 0:
        out["warmup_ratio"] = min(0.5, warmup / max_steps)
    elif warmup == 0:
        out["warmup_ratio"] = 0.0
    else:
        return warmup is None
    return True


def _apply_parts(out: dict, unet_only: Any, text_only: Any) -> None:
    out["train_parts"] = "unet_only" if unet_only is True else "text_encoder_only" if text_only is True else "both"


def _apply_arch(out: dict, d: Mapping) -> None:
    """kohya's boolean flags (v2, sdxl, v_parameterization, ...) name the architecture."""
    arch = catalog.architecture_for_flags({flag for flag in catalog.LEGACY_FLAGS if _bool(d.get(flag)) is True})
    if arch is not None:
        out["architecture"] = arch


def _apply_reg(out: dict, folder: Any) -> None:
    if folder:
        out["use_regularization"] = True
        out["reg_image_folder"] = str(folder)
    else:
        out["use_regularization"] = False
        out.pop("prior_loss_weight", None)


def _apply_cache(out: dict, cache: Any, to_disk: Any) -> None:
    if cache is None:
        return
    out["cache_latents"] = ("disk" if _bool(to_disk) is True else "memory") if _bool(cache) is True else "off"


def _apply_samples(out: dict, prompts: Any) -> None:
    if prompts:
        out["sample_images"] = True
        out["sample_prompts"] = str(prompts)
    else:
        out["sample_images"] = False
        out.pop("sample_every_n_epochs", None)


def _apply_network(out: dict, *, algo: Any, conv_dim: Any, conv_alpha: Any, conv_means_locon: bool = True) -> None:
    """LyCORIS algo names, or (popup era) a conv_dim given to plain LoRA, pick the network type."""
    conv_dim, conv_alpha = _int(conv_dim), _float(conv_alpha)
    algo = str(algo).lower() if algo else None
    if algo == "loha":
        out["network_type"] = "LoHa"
    elif algo == "lokr":
        out["network_type"] = "LoKr"
    elif algo in ("lora", "locon") or (conv_means_locon and isinstance(conv_dim, int) and conv_dim > 0):
        out["network_type"] = "LoCon"  # LyCORIS 'lora' with conv layers, or kohya LoRA with conv_dim
    else:
        out["network_type"] = "LoRA"
        return
    if isinstance(conv_dim, int) and conv_dim > 0:
        out["conv_dim"] = conv_dim
    if isinstance(conv_alpha, float) and conv_alpha > 0:
        out["conv_alpha"] = conv_alpha


def _apply_logging(out: dict, log_with: Any, logging_dir: Any) -> None:
    """kohya logs to TensorBoard when log_with names it, or when only a logging_dir is given."""
    if log_with not in (None, ""):
        out["tensorboard"] = str(log_with).strip().lower() in ("tensorboard", "all")
    elif logging_dir not in (None, ""):
        out["tensorboard"] = True


def _apply_realistic(out: dict) -> None:
    if out.get("clip_skip") is not None:
        out["realistic_model"] = out["clip_skip"] == 1
