"""The wizard's questions, in order, as data.

Every question knows its prompt, help, widget kind, default (a value or a
function of the earlier answers), allowed values, and when it applies. The
wizard, `easytrain questions`, the answers file validation, its JSON Schema
and the README's key reference all come from this one table.

No textual, no torch: this module must import in milliseconds.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from easytrain import machine
from easytrain.errors import UserError
from easytrain.optimizer_args import optimizer_args_problem

Values = Mapping[str, Any]

GROUPS = ("model", "data", "network", "learning", "output", "advanced")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MODEL_EXTENSIONS = (".safetensors", ".ckpt")
BUILTIN_TINY = "builtin:tiny"

from easytrain.catalog import (  # noqa: E402  (re-exported: the question table's names)
    ADAMW_FAMILY, ADAPTIVE_OPTIMIZERS, ARCHITECTURE_IDS, ARCHITECTURES as ARCHITECTURE_CATALOG, AUTO, BLOCK_LAYOUTS,
    NETWORK_TYPES, OPTIMIZERS, SCHEDULERS, TINY_MODEL_ARCH, always_checkpoint, block_layout, default_bucket_range,
    default_unet_lr, memory_factor, native_resolution, predicts_velocity, trains_text_encoder_by_default,
    uses_clip_skip,
)

ARCHITECTURES = (AUTO,) + ARCHITECTURE_IDS

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class Question:
    id: str
    prompt: str
    help: str
    kind: str  # yesno | choice | int | float | text | file | folder | model | mapping
    group: str
    default: Any = None  # a value, or a callable taking the earlier answers
    default_text: str = ""  # how the default reads in listings ("dim / 2")
    required: bool = False
    choices: tuple[tuple[Any, str], ...] = ()  # (value, label)
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    above: Optional[float] = None  # strictly greater than
    multiple_of: Optional[int] = None
    optional: bool = False  # an empty answer is a real answer (None)
    must_exist: bool = True  # folders: False means it is created when missing
    component_folder: bool = False  # model kind: a diffusers component folder (config.json) is fine too
    extensions: tuple[str, ...] = ()
    condition: Optional[Callable[[Values], bool]] = None
    condition_text: str = ""
    advanced: bool = False
    stored: bool = True  # False: asked, but not a key of the answers file
    check: Optional[Callable[[Any, Values], Optional[str]]] = None
    warn: Optional[Callable[[Any, Values], Optional[str]]] = None  # an allowed value worth a second look
    depends_on: tuple[str, ...] = ()  # earlier answers the default or condition reads

    def applies(self, values: Values) -> bool:
        return self.condition is None or bool(self.condition(values))

    def default_for(self, values: Values) -> Any:
        return self.default(values) if callable(self.default) else self.default

    @property
    def choice_values(self) -> tuple[Any, ...]:
        return tuple(value for value, _ in self.choices)


# ---------------------------------------------------------------- value rules

def allowed_text(q: Question) -> str:
    """What the question accepts, in words; used in every error message."""
    if q.kind == "yesno":
        return "true or false (yes/no)"
    if q.kind == "choice":
        return "one of " + ", ".join(repr(v) for v in q.choice_values)
    if q.kind in ("int", "float"):
        noun = "an integer" if q.kind == "int" else "a number"
        parts = []
        if q.minimum is not None and q.maximum is not None:
            parts.append(f"from {_num(q.minimum)} to {_num(q.maximum)}")
        elif q.minimum is not None:
            parts.append(f">= {_num(q.minimum)}")
        elif q.maximum is not None:
            parts.append(f"<= {_num(q.maximum)}")
        if q.above is not None:
            parts.append(f"> {_num(q.above)}")
        if q.multiple_of:
            parts.append(f"a multiple of {q.multiple_of}")
        text = noun + (" " + " and ".join(parts) if parts else "")
        return text + (", or empty" if q.optional else "")
    if q.kind == "file":
        return "an existing file ending in " + " or ".join(q.extensions) + (", or empty" if q.optional else "")
    if q.kind == "folder":
        noun = "an existing folder" if q.must_exist else "a folder (created if missing)"
        return noun + (", or empty" if q.optional else "")
    if q.kind == "model":
        folder = "a diffusers VAE or model folder" if q.component_folder else "a diffusers model folder"
        return (f"a .safetensors or .ckpt file, {folder}, or {BUILTIN_TINY!r}"
                + (", or empty" if q.optional else ""))
    if q.kind == "mapping":
        return "key=value pairs separated by spaces (a JSON object in the file)"
    return "text"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def parse_text(q: Question, text: str) -> Any:
    """Turn what a person typed into a value; raise ValueError with the reason.

    An empty string means "keep the default" and is handled by the caller,
    except for optional questions where the caller may pass it to mean None.
    """
    raw = text.strip()
    if q.kind == "yesno":
        low = raw.lower()
        if low in ("y", "yes", "true", "1", "on"):
            return True
        if low in ("n", "no", "false", "0", "off"):
            return False
        raise ValueError("answer yes or no")
    if q.kind == "choice":
        for value, label in q.choices:
            if raw.lower() in (str(value).lower(), label.lower()):
                return value
        raise ValueError("must be " + allowed_text(q))
    if q.kind in ("int", "float") and raw == "" and q.optional:
        return None
    if q.kind == "int":
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"must be {allowed_text(q)}, got {raw!r}") from None
        if not number.is_integer():
            raise ValueError(f"must be {allowed_text(q)}, got {raw!r}")
        return int(number)
    if q.kind == "float":
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"must be {allowed_text(q)}, got {raw!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"must be {allowed_text(q)}, got {raw!r}")
        return number
    if q.kind == "mapping":
        return parse_mapping(raw)
    if q.kind in ("file", "folder", "model") and raw == "" and q.optional:
        return None
    return raw


def parse_mapping(raw: str) -> dict[str, Any]:
    """'weight_decay=0.1 betas=0.9,0.99' -> {'weight_decay': 0.1, 'betas': [0.9, 0.99]}"""
    result: dict[str, Any] = {}
    for item in raw.split():
        if "=" not in item:
            raise ValueError(f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        result[key.strip()] = parse_scalar_or_list(value.strip())
    return result


def parse_scalar_or_list(text: str) -> Any:
    if "," in text:
        return [_parse_scalar(part.strip()) for part in text.split(",") if part.strip()]
    return _parse_scalar(text)


def _parse_scalar(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def format_value(q: Question, value: Any) -> str:
    """A value as a person would type it back."""
    if value is None:
        return ""
    if q.kind == "yesno":
        return "yes" if value else "no"
    if q.kind == "choice":
        for v, label in q.choices:
            if v == value:
                return label
    if q.kind == "mapping":
        return " ".join(
            f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in dict(value).items()
        )
    if q.kind == "float":
        return f"{value:g}"
    return str(value)


def check_value(q: Question, value: Any, values: Values, base_dir: Optional[Path] = None) -> Optional[str]:
    """Why ``value`` is not allowed for ``q`` (None when it is fine).

    ``values`` are the other answers (for cross checks); ``base_dir`` resolves
    relative paths (the answers file's folder). Paths are checked on disk only
    when ``base_dir`` is given.
    """
    shown = _shown(value)
    if value is None:
        if q.optional:
            return None
        return f"is required: {allowed_text(q)}"
    if q.kind == "yesno":
        if not isinstance(value, bool):
            return f"must be true or false, got {shown}"
    elif q.kind == "choice":
        if value not in q.choice_values:
            return f"must be {allowed_text(q)}, got {shown}"
    elif q.kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be {allowed_text(q)}, got {shown}"
        if isinstance(value, float) and not (math.isfinite(value) and (q.kind == "float" or value.is_integer())):
            return f"must be {allowed_text(q)}, got {shown}"
        if (q.minimum is not None and value < q.minimum) or (q.maximum is not None and value > q.maximum):
            return f"must be {allowed_text(q)}, got {shown}"
        if q.above is not None and not value > q.above:
            return f"must be {allowed_text(q)}, got {shown}"
        if q.multiple_of and int(value) % q.multiple_of:
            return f"must be {allowed_text(q)}, got {shown}"
    elif q.kind == "mapping":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return f"must be a JSON object of settings, got {shown}"
    elif q.kind in ("text", "file", "folder", "model"):
        if not isinstance(value, str):
            return f"must be text, got {shown}"
        if q.required and not value.strip():
            return f"is required: {allowed_text(q)}"
        if q.kind in ("file", "folder", "model") and base_dir is not None and value.strip():
            problem = _check_path(q, value, base_dir)
            if problem:
                return problem
    if q.check is not None:
        return q.check(value, values)
    return None


SHOWN_CHARS = 80  # a value quoted in a message is cut to this length


def _shown(value: Any, quote: bool = True) -> str:
    """A value as quoted in a message: repr (control characters escaped), cut when very long."""
    text = repr(value) if quote or not isinstance(value, str) else repr(value)[1:-1]
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


shown = _shown


def resolve(value: str, base_dir: Optional[Path]) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def architecture_of(v: Values) -> Optional[str]:
    """The architecture answer; for "auto", the one the base model's header names (None if unsure).

    So an answers file that leaves the architecture out still gets its model's defaults
    (SDXL: 1024 px, UNet only, its bucket range) and, for a v-pred SDXL file, sdxl-v.
    """
    arch = v.get("architecture")
    if arch not in (None, AUTO):
        return arch
    model = v.get("base_model")
    if not isinstance(model, str) or not model or model == BUILTIN_TINY:
        return TINY_MODEL_ARCH if model == BUILTIN_TINY else None
    base_dir = v.get("_base_dir")
    path = resolve(model, Path(base_dir) if base_dir else None)
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return None
    return _detected_architecture(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _detected_architecture(path: str, mtime_ns: int, size: int) -> Optional[str]:
    from easytrain.families.detect import resolve_architecture

    try:
        return resolve_architecture(path).arch
    except (UserError, OSError, ValueError):
        return None  # unsure, or not a model: the base_model check says what is wrong with the file


def _check_path(q: Question, value: str, base_dir: Path) -> Optional[str]:
    if q.kind == "model" and value == BUILTIN_TINY:
        return None
    path = resolve(value, base_dir)
    try:
        return _check_path_on_disk(q, path)
    except (OSError, ValueError) as exc:  # too long, a NUL byte, a symlink loop, no permission
        reason = getattr(exc, "strerror", None) or str(exc)
        return f"cannot use this path ({reason}): {_shown(str(path), quote=False)}"


def _check_path_on_disk(q: Question, path: Path) -> Optional[str]:
    if q.kind == "folder":
        if path.is_dir():
            return None
        if not q.must_exist and not path.exists():
            return None
        if path.exists():
            return f"{path} is a file, not a folder"
        return f"folder not found: {path}"
    if q.kind == "model" and path.is_dir():
        if (path / "model_index.json").is_file() or (path / "unet").is_dir():
            return None
        if q.component_folder and (path / "config.json").is_file():
            return None
        return f"{path} is a folder but not a diffusers model (no model_index.json); give a .safetensors/.ckpt file"
    if path.suffix.lower() not in q.extensions:
        return f"must end in {' or '.join(q.extensions)}, got {path.name!r}"
    if not path.is_file():
        return f"not a regular file (a pipe or a device): {path}" if path.exists() else f"file not found: {path}"
    return None


# ---------------------------------------------------------------- defaults

# The guides' VRAM table for SD1.x/SD2.x at 512 with an 8-bit optimizer and gradient checkpointing:
# (at least this many GiB, batch size). Bigger pictures need more, and SDXL at its 1024 about 2.5x
# (catalog.memory_factor).
VRAM_BATCH = ((0, 1), (9.5, 2), (11.5, 3), (15.5, 4), (23.5, 6), (39.5, 8), (79, 12))
CHECKPOINTING_OFF_FROM_GIB = 23.5  # SD1/SD2 units: enough memory to trade it for speed (never for SDXL)


def vram_per_512_picture(v: Values) -> Optional[float]:
    """GPU memory in "SD1 at 512" units: the GiB the table above is read with; None without a GPU."""
    gpu = machine.gpu_info()
    if gpu is None:
        return None
    arch = architecture_of(v)
    native = native_resolution(arch)
    side = _number(v, "resolution", native)
    pixels = side * _number(v, "height", side) / (native * native)
    return gpu.memory_gib / (pixels * memory_factor(arch))


def default_batch_size(v: Values) -> int:
    memory = vram_per_512_picture(v)
    if memory is None:
        return 2
    return max(batch for least, batch in VRAM_BATCH if memory >= least)


def default_gradient_checkpointing(v: Values) -> bool:
    memory = vram_per_512_picture(v)
    return memory is None or memory < CHECKPOINTING_OFF_FROM_GIB or always_checkpoint(architecture_of(v))


def vram_reason(key: str, v: Values) -> Optional[str]:
    """Why the default of ``key`` is what it is on this machine's GPU (None: not GPU-dependent)."""
    gpu = machine.gpu_info()
    if gpu is None or key not in ("batch_size", "gradient_checkpointing", "optimizer", "mixed_precision"):
        return None
    card = f"{gpu.name}, {gpu.memory_gib:.0f} GB"
    if key == "batch_size":
        return (f"Your GPU ({card}) fits about batch {default_batch_size(v)} at this resolution "
                "(guide at 512: 6-8 GB -> 1, 10 GB -> 2, 12 GB -> 3).")
    if key == "gradient_checkpointing":
        on = default_gradient_checkpointing(v)
        return f"Your GPU ({card}): " + ("checkpointing on keeps the run inside its memory." if on else
                                         "enough memory to leave it off and train faster.")
    if key == "optimizer":
        return f"Your GPU ({card}): the 8-bit optimizer keeps its state in about a quarter of the memory."
    return f"Your GPU ({card}): " + ("bf16 is supported and more stable." if machine.gpu_supports_bf16() else
                                     "no bf16 on this card, so fp16.")


def scaled_learning_rates(v: Values, old_batch: int, new_batch: int) -> dict[str, float]:
    """The learning rates for a new batch size by the square-root rule (the careful one for Adam-type
    optimizers; the linear rule is the upper end). Empty when nothing should scale: the batch did not
    change, or Prodigy/DAdaptAdam find their own step size."""
    if old_batch == new_batch or old_batch < 1 or new_batch < 1 or _adaptive(v):
        return {}
    factor = math.sqrt(new_batch / old_batch)
    return {key: float(f"{v[key] * factor:.3g}") for key in ("unet_lr", "text_encoder_lr")
            if isinstance(v.get(key), (int, float)) and v[key] > 0}


def _number(v: Values, key: str, fallback: float) -> float:
    """An earlier numeric answer, or ``fallback`` while that answer is missing or invalid."""
    value = v.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return fallback
    return float(value)


def _adaptive(v: Values) -> bool:
    return v.get("optimizer") in ADAPTIVE_OPTIMIZERS


def default_output_name(v: Values) -> str:
    folder = v.get("image_folder")
    if folder:
        root = Path(str(folder)).expanduser()
        base = v.get("_base_dir")
        if not root.is_absolute() and base:
            root = Path(base) / root
        try:
            names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            names = []
        for name in names:
            match = re.match(r"^\d+_(.+)$", name)
            if match:
                cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", match.group(1)).strip("_")
                if cleaned:
                    return cleaned
    return "my_lora"


def default_output_folder(v: Values) -> str:
    folder = v.get("image_folder")
    if folder:
        return str(Path(str(folder)).parent / "output") if Path(str(folder)).parent != Path(str(folder)) else "output"
    return "output"


# The guides' Prodigy settings: decoupled weight decay, a doubled step-size estimate, and a warmup
# that cannot overshoot while the estimate is still growing.
PRODIGY_ARGS = {"decouple": True, "weight_decay": 0.01, "d_coef": 2, "use_bias_correction": True,
                "safeguard_warmup": True}


def default_optimizer_args(v: Values) -> dict:
    if v.get("optimizer") in ADAMW_FAMILY:
        return {"weight_decay": 0.1, "betas": [0.9, 0.99]}
    if v.get("optimizer") == "Prodigy":
        return dict(PRODIGY_ARGS)
    return {}


def _check_output_place(value: Any, v: Values) -> Optional[str]:
    """Not inside the image folder: the next run would train on loss.png and the samples."""
    image = v.get("image_folder")
    if not isinstance(image, str) or not image.strip() or not str(value).strip():
        return None
    out, images = (os.path.normpath(os.path.expanduser(p)) for p in (str(value), image))
    if os.path.isabs(out) == os.path.isabs(images) and (out == images or out.startswith(images.rstrip(os.sep) + os.sep)):
        return (f"{_shown(value)} is inside the image folder; the next run would train on its files. "
                "Put the outputs beside it (the default)")
    return None


def _check_output_name(value: Any, _: Values) -> Optional[str]:
    text = str(value)
    if not NAME_PATTERN.match(text):
        return f"may only contain letters, digits, '-', '_' and '.', got {_shown(value)}"
    if text.strip(".") == "":
        return f"must hold a letter or digit, got {_shown(value)} (a name of dots means a folder)"
    if text.split(".")[0].upper() in WINDOWS_RESERVED_NAMES:
        return f"{_shown(value)} is a reserved device name on Windows; pick another name"
    if text.endswith("."):
        return f"must not end in '.', got {_shown(value)} (Windows drops it)"
    if len(text) > MAX_NAME_CHARS:
        return (f"must be at most {MAX_NAME_CHARS} characters (the files add up to 40 more and file "
                f"systems allow 255), got {len(text)}")
    return None


WINDOWS_RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{port}{n}" for port in ("COM", "LPT") for n in range(1, 10)])
MAX_NAME_CHARS = 200


def _check_buckets(value: Any, v: Values) -> Optional[str]:
    low = v.get("min_bucket_reso")
    if isinstance(low, int) and not isinstance(low, bool) and value < low:
        return f"must be at least min_bucket_reso ({low}), got {value!r}"
    return None


def _check_folder_repeats(value: Any) -> Optional[str]:
    for folder, repeats in dict(value).items():
        if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 10000:
            return f"repeats of {folder!r} must be an integer from 1 to 10000, got {repeats!r}"
    return None


def _check_token_length(value: Any, _: Values) -> Optional[str]:
    if value not in (75, 150, 225):
        return f"must be one of 75, 150, 225, got {value!r}"
    return None


def usual_resolution(v: Values) -> int:
    """The side the architecture's base models were trained at (SD1.x and 'auto': 512)."""
    return native_resolution(architecture_of(v))


def _warn_low_resolution(value: Any, v: Values) -> Optional[str]:
    """Low sizes are allowed (quick tests, small models) but blur a real checkpoint's results.

    The training area counts (resolution x height), so a wide 768x384 target is no warning for SD1.
    """
    usual = usual_resolution(v)
    height = v.get("height")
    height = height if isinstance(height, int) and height > 0 else value
    if not isinstance(value, int) or value * height >= usual * usual or v.get("base_model") == BUILTIN_TINY:
        return None
    size = f"{value}" if height == value else f"{value}x{height}"
    return (f"{size} is below the {usual}x{usual} this architecture's models are made for: fine for quick "
            "tests and small models, blurry for real ones")


def _check_separator(value: Any, _: Values) -> Optional[str]:
    if "," in str(value):
        return f"may not contain a comma (tags are separated by commas), got {value!r}"
    return None


def _uncached(value: Any, v: Values) -> Optional[str]:
    if value and v.get("cache_latents", "memory") != "off":
        return ("turns latent caching off, as in kohya: the pixels change every epoch, so each image goes "
                "through the VAE at every step (slower)")
    return None


def _warn_ztsnr(value: Any, v: Values) -> Optional[str]:
    if value and not v.get("v_parameterization") and not predicts_velocity(architecture_of(v)):
        return ("is meant for v-prediction (v_parameterization yes, or an SD2 768-v model); with noise "
                "prediction the last timestep has no signal to learn from")
    return None


def _check_blocks(value: Any, kind: str, v: Values) -> Optional[str]:
    """kohya's block-wise --network_args strings; empty is off. Lists per block must fit the architecture
    (any architecture's count while it is unknown: the plan checks again against the file's)."""
    from easytrain.network import blocks

    if not str(value).strip():
        return None
    chosen = block_layout(architecture_of(v))
    layouts = [BLOCK_LAYOUTS[chosen]] if chosen else list(BLOCK_LAYOUTS.values())
    try:
        if kind == "side":
            blocks.side_weights(str(value), layouts[0])
        elif kind == "mid":
            blocks.parse_numbers(str(value))
        else:
            blocks.per_block_in_any(str(value), layouts, int if kind == "dims" else float)
    except ValueError as exc:
        return str(exc)
    return None


def _yes(key: str) -> Callable[[Values], bool]:
    return lambda v: bool(v.get(key))


def _is(key: str, *allowed: Any) -> Callable[[Values], bool]:
    return lambda v: v.get(key) in allowed


def _is_not(key: str, *excluded: Any) -> Callable[[Values], bool]:
    return lambda v: v.get(key) not in excluded


def _no_split(v: Values) -> bool:
    split = v.get("validation_split")
    return not isinstance(split, (int, float)) or isinstance(split, bool) or not split > 0


def _validating(v: Values) -> bool:
    return not _no_split(v) or bool(v.get("validation_folder"))


# ---------------------------------------------------------------- the flow

QUESTIONS: tuple[Question, ...] = (
    Question(
        "base_model", "Which base model do you want to train on?",
        "The checkpoint you normally generate images with: a .safetensors or .ckpt file, or a "
        "diffusers folder. Its architecture (SD1.x, SD2.x, SDXL) is read from the file: NAI-family "
        "anime models are SD1.x; Pony, Illustrious and NoobAI are SDXL. "
        f"Type {BUILTIN_TINY} to try easytrain on its tiny demo model.",
        "model", "model", required=True, extensions=MODEL_EXTENSIONS,
    ),
    Question(
        "architecture", "Which architecture is this model?",
        "Only asked when the file does not say. SD2.x models at 768 pixels usually predict 'v' "
        "(their names often contain 768 or -v); 512 SD2.x models do not. Leave 'auto' to trust "
        "what was detected.",
        "choice", "model", default="auto",
        choices=((AUTO, "auto (as detected)"),) + tuple((a.id, a.label) for a in ARCHITECTURE_CATALOG.values()),
    ),
    Question(
        "image_folder", "Where is your image folder?",
        "Pick the folder ABOVE the N_name folders: e.g. 'train' holding '10_mychar'. The number "
        "before the underscore is how often each image repeats per epoch. Captions are .txt "
        "files next to the images with the same name.",
        "folder", "data", required=True,
    ),
    Question(
        "output_folder", "Where should the LoRA files go?",
        "A folder for the trained files, the tag list and the loss curve. It is created if it "
        "does not exist. The default sits next to your image folder.",
        "folder", "output", default=default_output_folder, default_text="<image folder>/../output",
        must_exist=False, check=_check_output_place,
        depends_on=("image_folder",),
    ),
    Question(
        "output_name", "What should the LoRA be called?",
        "Files become NAME-000001.safetensors for each saved epoch and NAME.safetensors at the "
        "end; you use it as <lora:NAME:1>. Letters, digits, '-', '_' and '.' only.",
        "text", "output", default=default_output_name, default_text="the first N_name folder's name",
        check=_check_output_name, depends_on=("image_folder",),
    ),
    Question(
        "realistic_model", "Is the base model a realistic (photo) model?",
        "No for anime and NAI-family models: they were made with the second-to-last text layer "
        "(clip skip 2). Yes for photo models such as SD1.5 itself, which use the last layer.",
        "yesno", "model", default=False,
        condition=lambda v: uses_clip_skip(architecture_of(v)), condition_text="not SDXL (no clip skip there)",
        depends_on=("base_model", "architecture"),
    ),
    Question(
        "use_regularization", "Use regularization images?",
        "Most LoRAs don't need them. They help when your trigger word bleeds into everything "
        "(pictures of the plain class keep it apart) or to keep a style LoRA from changing "
        "unrelated subjects.",
        "yesno", "data", default=False,
    ),
    Question(
        "reg_image_folder", "Where is the regularization folder?",
        "Same layout as the image folder: N_name folders with images (captions optional). They "
        "are balanced to the number of training images automatically.",
        "folder", "data", required=True, condition=_yes("use_regularization"),
        condition_text="regularization is yes", depends_on=("use_regularization",),
    ),
    Question(
        "optimizer", "Which optimizer?",
        "AdamW8bit is the usual choice: AdamW's results with less memory (needs bitsandbytes; "
        "easytrain falls back to AdamW where it can't run). Prodigy and DAdaptAdam find their "
        "own step size: their learning rates become 1.0 and alpha equals dim.",
        "choice", "learning", default="AdamW8bit", choices=tuple((o, o) for o in OPTIMIZERS),
    ),
    Question(
        "network_type", "Which kind of network?",
        "LoRA for characters and most things. LoCon also trains the convolution layers, which "
        "helps styles and fine detail. LoHa and LoKr pack more into small files but train slower.",
        "choice", "network", default="LoRA", choices=tuple((n, n) for n in NETWORK_TYPES),
    ),
    Question(
        "network_dim", "Network dim (rank)?",
        "16 is plenty for a character and makes a file of about 18 MB. Bigger dims learn more "
        "but overcook sooner and make bigger files.",
        "int", "network", default=lambda v: 8 if v.get("network_type") == "LoHa" else 16,
        default_text="16 (LoHa 8)", minimum=1, maximum=1024, depends_on=("network_type",),
    ),
    Question(
        "network_alpha", "Network alpha?",
        "Scales the learned change by alpha/dim. Half the dim is the common choice; with "
        "Prodigy or DAdaptAdam use alpha = dim.",
        "float", "network",
        default=lambda v: _number(v, "network_dim", 16) if _adaptive(v) else _number(v, "network_dim", 16) / 2,
        default_text="dim / 2 (Prodigy, DAdaptAdam: dim)", above=0, depends_on=("network_dim", "optimizer"),
    ),
    Question(
        "conv_dim", "Conv dim?",
        "The rank of the extra convolution layers. Small values are enough: they add detail, not "
        "identity.",
        "int", "network", default=lambda v: 8 if v.get("network_type") == "LoCon" else 4,
        default_text="LoCon 8, LoHa 4, LoKr 4", minimum=1, maximum=1024,
        condition=_is_not("network_type", "LoRA", None), condition_text="network type is not LoRA",
        depends_on=("network_type",),
    ),
    Question(
        "conv_alpha", "Conv alpha?",
        "Scales the convolution part like network alpha does; half the conv dim is typical "
        "(LoHa: 1).",
        "float", "network",
        default=lambda v: 1.0 if v.get("network_type") == "LoHa" else _number(v, "conv_dim", 8) / 2,
        default_text="conv dim / 2 (LoHa 1)", above=0,
        condition=_is_not("network_type", "LoRA", None), condition_text="network type is not LoRA",
        depends_on=("network_type", "conv_dim"),
    ),
    Question(
        "unet_lr", "UNet learning rate?",
        "5e-4 trains a character in a reasonable time. Use 1e-4 to 2e-4 for a slower, gentler "
        "run or for styles. SDXL: 2e-4 (1e-4 to 3e-4 is the usual range; its bigger UNet overcooks "
        "sooner). Prodigy and DAdaptAdam want 1.0.",
        "float", "learning", default=lambda v: 1.0 if _adaptive(v) else default_unet_lr(architecture_of(v)),
        default_text="5e-4 (SDXL: 2e-4; Prodigy, DAdaptAdam: 1.0)", minimum=0,
        depends_on=("base_model", "architecture", "optimizer"),
    ),
    Question(
        "text_encoder_lr", "Text encoder learning rate?",
        "About a fifth of the UNet's: 1e-4. The text encoder learns fast and overcooks easily. "
        "0 trains the UNet only.",
        "float", "learning", default=lambda v: 1.0 if _adaptive(v) else 1e-4,
        default_text="1e-4 (Prodigy, DAdaptAdam: 1.0)", minimum=0, depends_on=("optimizer",),
    ),
    Question(
        "scheduler", "Learning rate scheduler?",
        "cosine_with_restarts lowers the rate in waves, which works well for most LoRAs. "
        "constant_with_warmup is the usual pick for Prodigy and DAdaptAdam.",
        "choice", "learning",
        default=lambda v: "constant_with_warmup" if _adaptive(v) else "cosine_with_restarts",
        default_text="cosine_with_restarts (Prodigy, DAdaptAdam: constant_with_warmup)",
        choices=tuple((s, s) for s in SCHEDULERS), depends_on=("optimizer",),
    ),
    Question(
        "scheduler_restarts", "How many restarts (cycles)?",
        "How many times the cosine curve starts over. 3 is a good middle; 1 is a plain cosine.",
        "int", "learning", default=3, minimum=1, maximum=100,
        condition=_is("scheduler", "cosine_with_restarts"), condition_text="scheduler is cosine_with_restarts",
        depends_on=("scheduler",),
    ),
    Question(
        "scheduler_power", "Polynomial power?",
        "1.0 is a straight line down to zero; higher powers drop faster at the start.",
        "float", "learning", default=1.0, above=0, maximum=100,
        condition=_is("scheduler", "polynomial"), condition_text="scheduler is polynomial",
        depends_on=("scheduler",),
    ),
    Question(
        "warmup_ratio", "Warmup ratio?",
        "The share of all steps spent raising the learning rate from zero. 0.05 avoids a rough "
        "start; 0 turns warmup off.",
        "float", "learning", default=0.05, minimum=0, maximum=0.5,
        condition=_is_not("scheduler", "constant"), condition_text="scheduler is not constant",
        depends_on=("scheduler",),
    ),
    Question(
        "resolution", "Training resolution?",
        "512 for SD1.x and SD2.x 512 models, 768 for SD2.x 768, 1024 for SDXL. Higher catches finer "
        "detail but trains much slower. Images of other shapes go into matching buckets.",
        "int", "data", default=usual_resolution,
        default_text="512 (SD2 768-v: 768, SDXL: 1024)", minimum=64, maximum=4096, multiple_of=64,
        warn=_warn_low_resolution, depends_on=("base_model", "architecture"),
    ),
    Question(
        "height", "Training height?",
        "Leave empty for a square area (resolution x resolution). Set it only to train a "
        "non-square target area.",
        "int", "data", default=None, default_text="empty (square)", optional=True,
        minimum=64, maximum=4096, multiple_of=64,
    ),
    Question(
        "batch_size", "Batch size?",
        "Images per step. At 512: 6-8 GB of VRAM -> 1, 10 GB -> 2, 12 GB -> 3; SDXL at 1024 "
        "wants 1 below 16 GB (with checkpointing and an 8-bit optimizer). Bigger batches "
        "mean fewer steps for the same epochs; the learning rate usually grows with the batch "
        "(x2 batch: about x1.4 to x2 the rate).",
        "int", "learning", default=default_batch_size, minimum=1, maximum=256,
        default_text="2 (with a GPU: what fits its memory)",
        depends_on=("resolution", "height", "base_model", "architecture"),
    ),
    Question(
        "length_by", "Set the training length by epochs or by steps?",
        "Epochs are easier to reason about and to save per; steps pin an exact total.",
        "choice", "learning", default="epochs", choices=(("epochs", "epochs"), ("steps", "steps")),
    ),
    Question(
        "epochs", "How many epochs?",
        "One epoch shows every image its repeats times. 10 epochs with the repeats in your "
        "folder names usually lands a character at 1000-3500 steps.",
        "int", "learning", default=10, minimum=1, maximum=10000,
        condition=_is("length_by", "epochs"), condition_text="length by epochs", depends_on=("length_by",),
    ),
    Question(
        "max_steps", "How many steps?",
        "The exact number of optimizer steps to train.",
        "int", "learning", default=1600, minimum=1, maximum=10_000_000,
        condition=_is("length_by", "steps"), condition_text="length by steps", depends_on=("length_by",),
    ),
    Question(
        "save_every_n_epochs", "Save a file every how many epochs?",
        "1 keeps every epoch so you can fall back if the last one is overcooked. 0 saves only "
        "the final file.",
        "int", "output", default=1, minimum=0, maximum=10000,
    ),
    Question(
        "save_every_n_steps", "Also save every how many steps?",
        "For long epochs: a file every N steps as well (NAME-step00001000.safetensors), with its "
        "resume state when saving state is on. 0 saves by epochs only.",
        "int", "output", default=0, minimum=0, maximum=10_000_000,
    ),
    Question(
        "shuffle_captions", "Shuffle caption tags?",
        "Yes: tag order stops mattering, which removes a bias toward the first tags. The first "
        "keep-tokens tags stay in place. SDXL: no by default, so that each caption goes through the "
        "text encoders once and they leave the GPU (kohya's cache_text_encoder_outputs, about 1.6 GB "
        "saved); say yes if memory allows.",
        "yesno", "learning", default=lambda v: trains_text_encoder_by_default(architecture_of(v)),
        default_text="yes (SDXL: no)", depends_on=("base_model", "architecture"),
    ),
    Question(
        "keep_tokens", "How many leading tags stay fixed?",
        "1 keeps the trigger tag at the front of every caption. 0 shuffles everything.",
        "int", "learning", default=1, minimum=0, maximum=100,
    ),
    Question(
        "train_parts", "Which parts to train?",
        "Both is right for nearly everything on SD1/SD2. For SDXL, UNet only is the default (as "
        "kohya advises): both text encoders stay frozen and their outputs are computed once, which "
        "saves memory and time. UNet only is gentler on prompts; text encoder only is rarely useful.",
        "choice", "network",
        default=lambda v: "both" if trains_text_encoder_by_default(architecture_of(v)) else "unet_only",
        default_text="both (SDXL: unet only)", depends_on=("base_model", "architecture"),
        choices=(("both", "both"), ("unet_only", "unet only"), ("text_encoder_only", "text encoder only")),
    ),
    Question(
        "flip_aug", "Flip images horizontally at random?",
        "Doubles the variety, but mirrors asymmetric features (a single pigtail, an eyepatch, "
        "text). Leave off for characters with such details.",
        "yesno", "data", default=False,
    ),
    Question(
        "comment", "A comment to store in the file?",
        "Saved in the LoRA's metadata where UIs show it: the trigger words and the recommended "
        "weight are the useful things to put here.",
        "text", "output", default="",
    ),
    Question(
        "bucket_no_upscale", "Keep small images from being enlarged?",
        "Yes puts images smaller than the training size into smaller buckets instead of "
        "upscaling them (upscaling adds blur).",
        "yesno", "data", default=False,
    ),
    Question(
        "mixed_precision", "Mixed precision?",
        "bf16 on RTX 30xx/40xx and newer (more stable) and on the CPU; fp16 on older cards. 'no' trains in full "
        "fp32: slow and memory hungry, mainly for debugging.",
        "choice", "learning", default=lambda v: machine.best_mixed_precision(),
        default_text="bf16 (fp16 on a GPU older than RTX 30xx)",
        choices=(("fp16", "fp16"), ("bf16", "bf16"), ("no", "no")),
    ),
    Question(
        "save_precision", "Save precision?",
        "fp16 files load everywhere and are half the size of float.",
        "choice", "output", default="fp16", choices=(("fp16", "fp16"), ("bf16", "bf16"), ("float", "float")),
    ),
    Question(
        "cache_latents", "Cache latents?",
        "In memory: images are encoded once, which is faster and frees VRAM. On disk: the same, "
        "and kept for the next run. Off: only needed for random-crop style augmentation. "
        "The SDXL VAE overflows in fp16, so for SDXL it always runs in fp32.",
        "choice", "learning", default="memory",
        choices=(("memory", "in memory"), ("disk", "on disk"), ("off", "off")),
    ),
    Question(
        "min_snr_gamma", "Min-SNR gamma?",
        "5 balances the loss across noise levels and usually trains faster and cleaner. 0 turns "
        "it off.",
        "float", "learning", default=5.0, minimum=0, maximum=100,
    ),
    Question(
        "tag_summary", "Write a tag summary file?",
        "Writes NAME_tags.txt next to the LoRA with 'count tag' per line, so you can see which "
        "tags the LoRA learned.",
        "choice", "output", default="by_count",
        choices=(("by_count", "by count"), ("alphabetical", "alphabetical"), ("none", "none")),
    ),
    Question(
        "sample_images", "Make sample images while training?",
        "Renders your prompts every few epochs so you can watch the LoRA form. Costs a little "
        "time per sample.",
        "yesno", "output", default=False,
    ),
    Question(
        "sample_prompts", "Which prompts file?",
        "A .txt file, one prompt per line; a line may add --n negative prompt --w 512 --h 512 "
        "--d seed --l cfg scale --s steps. Lines starting with # are skipped.",
        "file", "output", required=True, extensions=(".txt",),
        condition=_yes("sample_images"), condition_text="sample images is yes", depends_on=("sample_images",),
    ),
    Question(
        "sample_every_n_epochs", "Sample every how many epochs?",
        "1 samples after each epoch. 0 samples by steps only (the next question).",
        "int", "output", default=1, minimum=0, maximum=10000,
        condition=_yes("sample_images"), condition_text="sample images is yes", depends_on=("sample_images",),
    ),
    Question(
        "sample_every_n_steps", "Also sample every how many steps?",
        "For long epochs: samples every N steps as well. 0 samples by epochs only.",
        "int", "output", default=0, minimum=0, maximum=10_000_000,
        condition=_yes("sample_images"), condition_text="sample images is yes", depends_on=("sample_images",),
    ),
    Question(
        "validation_split", "Hold back a share of the images to measure a validation loss?",
        "0.1 keeps every tenth image of each folder out of training and measures the loss on them "
        "at every saved file: where that loss is lowest is usually the file to keep. 0 holds nothing "
        "back (small datasets need every image).",
        "float", "data", default=0.0, minimum=0, maximum=0.5,
    ),
    Question(
        "validation_folder", "Or a folder of validation images?",
        "Captioned images that are never trained on, directly in the folder or in N_name subfolders; "
        "their loss is measured at every saved file. Empty for none.",
        "folder", "data", default=None, optional=True,
        condition=_no_split, condition_text="validation split is 0", depends_on=("validation_split",),
    ),
    # ------------------------------------------------------------ advanced
    Question(
        "noise_offset", "Noise offset?",
        "Small values (0.05-0.1) let the model learn very dark and very bright images. 0 is off.",
        "float", "advanced", default=0.0, minimum=0, maximum=1, advanced=True,
    ),
    Question(
        "max_token_length", "Longest caption in tokens?",
        "225 reads captions up to three times CLIP's 75 tokens; longer captions are cut.",
        "int", "advanced", default=225, check=_check_token_length, advanced=True,
    ),
    Question(
        "caption_extension", "Caption file extension?",
        "The extension of the caption files next to the images.",
        "text", "advanced", default=".txt", advanced=True,
        check=lambda value, _: None if re.match(r"^\.[A-Za-z0-9]+$", str(value)) else
        f"must start with a dot, like '.txt', got {value!r}",
    ),
    Question(
        "enable_bucket", "Use aspect-ratio buckets?",
        "Yes trains non-square images in buckets of similar shape instead of cropping them square.",
        "yesno", "advanced", default=True, advanced=True,
    ),
    Question(
        "min_bucket_reso", "Smallest bucket side?",
        "No bucket is narrower or shorter than this.",
        "int", "advanced", default=lambda v: default_bucket_range(architecture_of(v))[0],
        default_text="256 (SDXL: 512)", minimum=64, maximum=4096, multiple_of=64, advanced=True,
        condition=_yes("enable_bucket"), condition_text="buckets on",
        depends_on=("enable_bucket", "base_model", "architecture"),
    ),
    Question(
        "max_bucket_reso", "Largest bucket side?",
        "No bucket is wider or taller than this.",
        "int", "advanced", default=lambda v: default_bucket_range(architecture_of(v))[1],
        default_text="1024 (SDXL: 2048)", minimum=64, maximum=8192, multiple_of=64, advanced=True,
        check=_check_buckets,
        condition=_yes("enable_bucket"), condition_text="buckets on",
        depends_on=("enable_bucket", "min_bucket_reso", "base_model", "architecture"),
    ),
    Question(
        "bucket_reso_steps", "Bucket size step?",
        "Bucket sides are multiples of this. 64 suits every SD model.",
        "int", "advanced", default=64, minimum=8, maximum=512, multiple_of=8, advanced=True,
        condition=_yes("enable_bucket"), condition_text="buckets on", depends_on=("enable_bucket",),
    ),
    Question(
        "gradient_checkpointing", "Gradient checkpointing?",
        "Yes saves a lot of VRAM for a little speed. Turn it off only on a large card.",
        "yesno", "advanced", default=default_gradient_checkpointing, advanced=True,
        default_text="yes (a GPU with 24 GB or more at 512: no)",
        depends_on=("resolution", "height", "base_model", "architecture"),
    ),
    Question(
        "seed", "Random seed?",
        "The same seed and settings give the same LoRA.",
        "int", "advanced", default=42, minimum=0, maximum=2**32 - 1, advanced=True,
    ),
    Question(
        "validation_seed", "Seed for picking the validation images?",
        "Which images the validation split holds back. Keep it to compare runs on the same images.",
        "int", "advanced", default=lambda v: v["seed"] if isinstance(v.get("seed"), int) else question("seed").default,
        default_text="the random seed",
        minimum=0, maximum=2**32 - 1, advanced=True,
        condition=lambda v: not _no_split(v), condition_text="validation split above 0",
        depends_on=("validation_split", "seed"),
    ),
    Question(
        "validate_every_n_steps", "Also measure the validation loss every how many steps?",
        "It is always measured at each saved file and at the end; N adds points to the curve in "
        "between. 0: only at saves.",
        "int", "advanced", default=0, minimum=0, maximum=10_000_000, advanced=True,
        condition=_validating, condition_text="a validation split or folder is set",
        depends_on=("validation_split", "validation_folder"),
    ),
    Question(
        "max_grad_norm", "Max gradient norm?",
        "Clips unusually large updates; 1.0 is standard. 0 turns clipping off.",
        "float", "advanced", default=1.0, minimum=0, maximum=1000, advanced=True,
    ),
    Question(
        "save_state", "Save training state for resuming?",
        "Yes keeps the optimizer and progress with each saved epoch, so an interrupted run can "
        "continue with `easytrain train FILE --resume`.",
        "yesno", "advanced", default=True, advanced=True,
    ),
    Question(
        "keep_states", "How many saved states to keep?",
        "Only the newest states are kept; each is about as big as three LoRA files.",
        "int", "advanced", default=2, minimum=1, maximum=1000, advanced=True,
        condition=_yes("save_state"), condition_text="save state is yes", depends_on=("save_state",),
    ),
    Question(
        "optimizer_args", "Extra optimizer settings?",
        "Passed to the optimizer as they are, e.g. weight_decay=0.1 betas=0.9,0.99 (the AdamW "
        "defaults here). Empty for none.",
        "mapping", "advanced", default=default_optimizer_args,
        default_text="AdamW, AdamW8bit: weight_decay=0.1 betas=0.9,0.99; Prodigy: decouple=True "
                     "weight_decay=0.01 d_coef=2 use_bias_correction=True safeguard_warmup=True; others: none",
        advanced=True, depends_on=("optimizer",), check=lambda value, v: optimizer_args_problem(v.get("optimizer"), value),
    ),
    Question(
        "clip_skip", "Clip skip?",
        "Which text-encoder layer the captions come from, counted from the end. Set from the "
        "realistic-model answer: 1 for photo models, 2 for anime/NAI models. SDXL does not use it: "
        "it always takes both encoders' second-to-last layers.",
        "int", "advanced", default=lambda v: 1 if v.get("realistic_model") else 2,
        default_text="2 (realistic model: 1)", minimum=1, maximum=12, advanced=True,
        depends_on=("realistic_model",),
    ),
    Question(
        "prior_loss_weight", "Regularization loss weight?",
        "How much the regularization images count against the training images; 1.0 is even.",
        "float", "advanced", default=1.0, minimum=0, maximum=100, advanced=True,
        condition=_yes("use_regularization"), condition_text="regularization is yes",
        depends_on=("use_regularization",),
    ),
    Question(
        "dataset_config", "Dataset TOML instead of the folders?",
        "A kohya-style dataset .toml ([[datasets]] / [[datasets.subsets]]). When given, it "
        "replaces the image and regularization folders. Empty for none.",
        "file", "advanced", default=None, optional=True, extensions=(".toml",), advanced=True,
    ),
    Question(
        "folder_repeats", "Repeats per folder, instead of the numbers in the folder names?",
        "folder=repeats pairs, e.g. 10_mychar=4 10_background=1. The wizard's suggested-repeats "
        "step writes these, so nothing on disk needs renaming. Empty: the numbers in the names.",
        "mapping", "advanced", default=lambda v: {}, default_text="none (the number in each folder's name)",
        check=lambda value, _: _check_folder_repeats(value), advanced=True,
    ),
    Question(
        "vae", "A separate VAE?",
        "A VAE (.safetensors, .ckpt, or a diffusers folder) used instead of the base model's own "
        "to cache latents and render samples, like kohya's --vae. It must fit the base model's "
        "architecture. Empty: the base model's VAE.",
        "model", "advanced", default=None, optional=True, extensions=MODEL_EXTENSIONS + (".pt",),
        component_folder=True, advanced=True,
    ),
    Question(
        "network_weights", "Continue from an earlier LoRA?",
        "A .safetensors LoRA of the same type and dim to start from instead of zero. Empty for "
        "a fresh start.",
        "file", "advanced", default=None, optional=True, extensions=(".safetensors",), advanced=True,
    ),
    Question(
        "sample_before_training", "Also sample before training starts?",
        "Shows what the base model makes of your prompts, for comparison.",
        "yesno", "advanced", default=False, advanced=True,
        condition=_yes("sample_images"), condition_text="sample images is yes", depends_on=("sample_images",),
    ),
    Question(
        "torch_compile", "Compile the UNet with torch.compile?",
        "Can speed up long runs on recent GPUs after a slow first minute. Off is the safe choice.",
        "yesno", "advanced", default=False, advanced=True,
    ),
    Question(
        "log_every_n_steps", "Progress line every how many steps?",
        "How often the loss is read back and printed when not in a terminal.",
        "int", "advanced", default=10, minimum=1, maximum=100000, advanced=True,
    ),
    Question(
        "tensorboard", "Write TensorBoard logs?",
        "Event files under OUTPUT/logs/NAME with the loss curves, learning rates, speed and the "
        "sample images; watch them with `tensorboard --logdir OUTPUT/logs`.",
        "yesno", "advanced", default=True, advanced=True,
    ),
    # ------------------------------------------------------------ kohya's further settings
    Question(
        "gradient_accumulation_steps", "Gradient accumulation steps?",
        "Adds up this many batches before each optimizer step: the effect of a bigger batch without its "
        "memory. Steps count optimizer steps, as in kohya.",
        "int", "advanced", default=1, minimum=1, maximum=1024, advanced=True,
    ),
    Question(
        "caption_dropout_rate", "Caption dropout rate?",
        "The share of images trained with an empty caption (0.05-0.1 makes the LoRA work without its "
        "trigger too). 0 is off.",
        "float", "advanced", default=0.0, minimum=0, maximum=1, advanced=True,
    ),
    Question(
        "caption_dropout_every_n_epochs", "Drop all captions every how many epochs?",
        "Every Nth epoch trains without captions. 0 is off.",
        "int", "advanced", default=0, minimum=0, maximum=10000, advanced=True,
    ),
    Question(
        "caption_tag_dropout_rate", "Tag dropout rate?",
        "The share of tags left out of each caption at random; the kept leading tags are never dropped. 0 is off.",
        "float", "advanced", default=0.0, minimum=0, maximum=1, advanced=True,
    ),
    Question(
        "keep_tokens_separator", "Keep-tokens separator?",
        "Text such as ||| in a caption: the tags before it stay first (and after a second one, last) "
        "instead of the first keep-tokens tags. Empty is off.",
        "text", "advanced", default="", advanced=True, check=_check_separator,
    ),
    Question(
        "random_crop", "Crop at random instead of the centre?",
        "A different crop of each image every epoch. Turns latent caching off (slower).",
        "yesno", "advanced", default=False, advanced=True, warn=_uncached,
    ),
    Question(
        "color_aug", "Jitter colours slightly?",
        "Now and then a small hue or brightness change. Turns latent caching off (slower).",
        "yesno", "advanced", default=False, advanced=True, warn=_uncached,
    ),
    Question(
        "alpha_mask", "Use transparency as a loss mask?",
        "Transparent parts of PNG/WebP images do not count in the loss, so a background can be left out.",
        "yesno", "advanced", default=False, advanced=True,
    ),
    Question(
        "mask_folder", "Loss mask folder?",
        "A folder like the image folder (the same N_name subfolders) with a mask per image of the same "
        "name: white counts in the loss, black does not. Empty for none.",
        "folder", "advanced", default=None, optional=True, advanced=True,
    ),
    Question(
        "multires_noise_iterations", "Multires noise iterations?",
        "Adds coarser noise too, which helps large shapes and contrast; 6-10 is usual. 0 is off.",
        "int", "advanced", default=0, minimum=0, maximum=64, advanced=True,
    ),
    Question(
        "multires_noise_discount", "Multires noise discount?",
        "How much weaker each coarser level is; 0.3 is common, 0.8 for strong effects.",
        "float", "advanced", default=0.3, above=0, maximum=1, advanced=True,
        condition=lambda v: bool(v.get("multires_noise_iterations")), condition_text="multires noise is on",
        depends_on=("multires_noise_iterations",),
    ),
    Question(
        "adaptive_noise_scale", "Adaptive noise scale?",
        "Grows the noise offset with each image's mean brightness (kohya suggests 1/10 of the offset). 0 is off.",
        "float", "advanced", default=0.0, minimum=-1, maximum=1, advanced=True,
        condition=lambda v: bool(v.get("noise_offset")), condition_text="noise offset is on",
        depends_on=("noise_offset",),
    ),
    Question(
        "ip_noise_gamma", "Input perturbation noise (ip_noise_gamma)?",
        "Adds a little extra noise to the inputs only; 0.1 is the usual value. 0 is off.",
        "float", "advanced", default=0.0, minimum=0, maximum=1, advanced=True,
    ),
    Question(
        "zero_terminal_snr", "Zero terminal SNR?",
        "Rescales the noise schedule so the last step is pure noise (very dark and bright images); "
        "needs v-prediction.",
        "yesno", "advanced", default=False, advanced=True, warn=_warn_ztsnr,
    ),
    Question(
        "v_parameterization", "Train the v-prediction target?",
        "For models that predict v (SD2 768-v always does). Say yes only for a v-prediction fine-tune "
        "of another architecture.",
        "yesno", "advanced", default=False, advanced=True,
    ),
    Question(
        "scale_v_pred_loss_like_noise_pred", "Scale the v-prediction loss like noise prediction?",
        "Weights each step's v loss by snr/(snr+1), as a noise-prediction loss would be.",
        "yesno", "advanced", default=False, advanced=True,
    ),
    Question(
        "debiased_estimation_loss", "Debiased estimation loss?",
        "Weights each step's loss by 1/sqrt(snr), favouring the noisy steps (an alternative to min-SNR).",
        "yesno", "advanced", default=False, advanced=True,
    ),
    Question(
        "loss_type", "Loss type?",
        "l2 is the usual squared error; huber and smooth_l1 are less thrown by outliers.",
        "choice", "advanced", default="l2", advanced=True,
        choices=(("l2", "l2"), ("huber", "huber"), ("smooth_l1", "smooth_l1")),
    ),
    Question(
        "huber_schedule", "Huber schedule?",
        "How the Huber threshold changes over the noise steps; snr is kohya's default.",
        "choice", "advanced", default="snr", advanced=True,
        choices=(("snr", "snr"), ("exponential", "exponential"), ("constant", "constant")),
        condition=_is_not("loss_type", "l2", None), condition_text="loss type is not l2", depends_on=("loss_type",),
    ),
    Question(
        "huber_c", "Huber threshold (huber_c)?",
        "Errors below it count as squared, above it as absolute; 0.1 is kohya's default.",
        "float", "advanced", default=0.1, above=0, maximum=1, advanced=True,
        condition=_is_not("loss_type", "l2", None), condition_text="loss type is not l2", depends_on=("loss_type",),
    ),
    Question(
        "huber_scale", "Huber threshold scale?",
        "Multiplies the threshold of the exponential and constant schedules; 1 keeps it.",
        "float", "advanced", default=1.0, above=0, maximum=100, advanced=True,
        condition=_is_not("loss_type", "l2", None), condition_text="loss type is not l2", depends_on=("loss_type",),
    ),
    Question(
        "dora", "Weight-decomposed LoRA (DoRA)?",
        "Also learns each weight's magnitude, often closer to a full fine-tune; a little slower. LoRA and LoCon only.",
        "yesno", "advanced", default=False, advanced=True,
        condition=_is("network_type", "LoRA", "LoCon"), condition_text="network type is LoRA or LoCon",
        depends_on=("network_type",),
    ),
    Question(
        "down_lr_weight", "Down-block learning-rate weights?",
        "12 comma-separated factors for the UNet's down blocks (SDXL: 9 input blocks), or cosine, sine, linear, "
        "reverse_linear, zeros (+base). Empty is 1 everywhere.",
        "text", "advanced", default="", advanced=True, check=lambda value, v: _check_blocks(value, "side", v),
    ),
    Question(
        "mid_lr_weight", "Middle-block learning-rate weight?",
        "One factor for the UNet's middle block (SDXL: 3, one per middle block). Empty is 1.",
        "text", "advanced", default="", advanced=True, check=lambda value, v: _check_blocks(value, "mid", v),
    ),
    Question(
        "up_lr_weight", "Up-block learning-rate weights?",
        "12 factors for the UNet's up blocks (SDXL: 9 output blocks), deepest first, or a preset as for the "
        "down blocks. Empty is 1.",
        "text", "advanced", default="", advanced=True, check=lambda value, v: _check_blocks(value, "side", v),
    ),
    Question(
        "block_lr_zero_threshold", "Block learning-rate zero threshold?",
        "Block weights at or below this become 0, and those blocks are left out of the file.",
        "float", "advanced", default=0.0, minimum=0, maximum=10, advanced=True,
    ),
    Question(
        "block_dims", "Dims per block?",
        "25 comma-separated dims (12 down, middle, 12 up; SDXL: 23, as kohya numbers them) instead of the "
        "network dim; 0 leaves a block out. Empty for none.",
        "text", "advanced", default="", advanced=True, check=lambda value, v: _check_blocks(value, "dims", v),
    ),
    Question(
        "block_alphas", "Alphas per block?",
        "25 comma-separated alphas (SDXL: 23) to go with the dims per block. Empty for the network alpha.",
        "text", "advanced", default="", advanced=True, check=lambda value, v: _check_blocks(value, "alphas", v),
    ),
    Question(
        "conv_block_dims", "Conv dims per block?",
        "25 conv dims (SDXL: 23) for LoCon; 0 leaves a block's convs out. Empty for the conv dim.",
        "text", "advanced", default="", advanced=True, check=lambda value, v: _check_blocks(value, "dims", v),
        condition=_is_not("network_type", "LoRA", None), condition_text="network type is not LoRA",
        depends_on=("network_type",),
    ),
    Question(
        "conv_block_alphas", "Conv alphas per block?",
        "25 conv alphas (SDXL: 23) to go with the conv dims per block. Empty for the conv alpha.",
        "text", "advanced", default="", advanced=True, check=lambda value, v: _check_blocks(value, "alphas", v),
        condition=_is_not("network_type", "LoRA", None), condition_text="network type is not LoRA",
        depends_on=("network_type",),
    ),
    Question(
        "ema", "Keep an average (EMA) of the weights?",
        "Also saves NAME-ema files holding a smoothed average of the training, often cleaner than the last steps.",
        "yesno", "advanced", default=False, advanced=True,
    ),
    Question(
        "ema_decay", "EMA decay?",
        "How slowly the average follows: 0.999 averages over about the last 1000 steps.",
        "float", "advanced", default=0.999, above=0.5, maximum=0.99999, advanced=True,
        condition=_yes("ema"), condition_text="EMA is yes", depends_on=("ema",),
    ),
)

# Asked by the wizard but not stored in the answers file.
ADVANCED_GATE = Question(
    "advanced_settings", "Change the advanced settings?",
    "Noise offset, caption length, buckets, gradient checkpointing, seed, resume state, optimizer "
    "arguments, TensorBoard, and kohya's further settings (accumulation, caption dropout, masks, noise "
    "and loss variants, DoRA, block weights, EMA). Their defaults suit nearly every run.",
    "yesno", "advanced", default=False, stored=False,
)
SAVE_AS = Question(
    "save_answers_as", "Save the answers as?",
    "The answers file is what the trainer reads. Review it, keep it, re-run it with "
    "`easytrain train FILE`.",
    "text", "output", default=lambda v: f"answers/{v.get('output_name') or 'my_lora'}.json",
    default_text="answers/<output name>.json", stored=False,
    check=lambda value, _: None if str(value).lower().endswith(".json") else f"must end in .json, got {value!r}",
)

BY_ID: dict[str, Question] = {q.id: q for q in QUESTIONS}
KEYS: tuple[str, ...] = tuple(q.id for q in QUESTIONS)
BASIC: tuple[Question, ...] = tuple(q for q in QUESTIONS if not q.advanced)
ADVANCED: tuple[Question, ...] = tuple(q for q in QUESTIONS if q.advanced)


def question(key: str) -> Question:
    return BY_ID[key]


def value_warnings(values: Values) -> list[str]:
    """"key: why" for each allowed answer worth a second look (shown by `check`, `train` and the wizard)."""
    found = []
    for q in QUESTIONS:
        if q.warn is not None and q.id in values and values[q.id] is not None:
            text = q.warn(values[q.id], values)
            if text:
                found.append(f"{q.id}: {text}")
    return found


def applicable_values(values: Values) -> dict[str, Any]:
    """Fill defaults in question order and drop answers whose question does not apply.

    ``values`` may be partial; the result has a value (possibly None for an
    optional question) for every question that applies, and nothing else.
    Keys starting with '_' are context (like _base_dir) and pass through.
    """
    context = {k: v for k, v in values.items() if k.startswith("_")}
    result: dict[str, Any] = dict(context)
    for q in QUESTIONS:
        if not q.applies(result):
            continue
        if q.id in values:
            result[q.id] = values[q.id]
        elif not q.required:
            result[q.id] = q.default_for(result)
    return {k: v for k, v in result.items() if not k.startswith("_")}
