"""Reading LoRA files, grouping their keys per module, writing results atomically.

A kohya-format file holds ``<module>.<suffix>`` keys: ``lora_down.weight`` /
``lora_up.weight`` (LoRA, LoCon; ``lora_mid.weight`` for LoCon's Tucker form),
``hada_*`` (LoHa), ``lokr_*`` (LoKr), an optional ``dora_scale`` (DoRA) and a
0-dim ``alpha``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from easytrain.errors import UserError
from easytrain.model.detect import read_safetensors_header

LORA = "LoRA"
LOHA = "LoHa"
LOKR = "LoKr"
_TYPE_MARKERS = (("lora_down.weight", LORA), ("hada_w1_a", LOHA), ("lokr_w1", LOKR), ("lokr_w1_a", LOKR))


@dataclass
class Module:
    """One adapted layer of a LoRA file: its tensors by suffix (``lora_down.weight``, ``alpha``, ...)."""

    name: str
    tensors: dict[str, torch.Tensor]

    @property
    def kind(self) -> str | None:
        """LoRA (also LoCon), LoHa or LoKr; None for a module this reader does not know."""
        for marker, kind in _TYPE_MARKERS:
            if marker in self.tensors:
                return kind
        return None

    @property
    def is_conv(self) -> bool:
        return any(t.dim() == 4 for k, t in self.tensors.items() if k != "dora_scale")

    @property
    def kernel_is_1x1(self) -> bool:
        down = self.tensors.get("lora_down.weight")
        return down is None or down.dim() != 4 or tuple(down.shape[2:]) == (1, 1)

    @property
    def dora(self) -> bool:
        return "dora_scale" in self.tensors

    @property
    def alpha(self) -> float | None:
        alpha = self.tensors.get("alpha")
        return None if alpha is None else float(alpha.float().item())

    @property
    def rank(self) -> int | None:
        t = self.tensors
        if "lora_down.weight" in t:
            return t["lora_down.weight"].shape[0]
        if "hada_w1_b" in t:
            return t["hada_w1_b"].shape[0]
        for key in ("lokr_w1_b", "lokr_w2_b"):
            if key in t:
                return t[key].shape[0]
        return None

    @property
    def part(self) -> str:
        """The kohya prefix: lora_unet, lora_te, lora_te1, lora_te2, ..."""
        return part_of(self.name)


def part_of(name: str) -> str:
    head = name.split("_")
    return "_".join(head[:2]) if len(head) > 1 else name


@dataclass
class LoraFile:
    path: Path
    modules: dict[str, Module]
    metadata: dict[str, str]
    dtype: torch.dtype
    unknown_keys: list[str] = field(default_factory=list)  # keys not of the form <module>.<suffix>

    @property
    def kinds(self) -> set[str]:
        return {m.kind for m in self.modules.values() if m.kind}

    @property
    def network_type(self) -> str:
        """LoRA, LoCon, LoHa, LoKr (with "+ DoRA" when it has magnitudes), or a mix."""
        kinds = self.kinds
        if kinds == {LORA}:
            name = "LoCon" if any(m.is_conv and not m.kernel_is_1x1 for m in self.modules.values()) else LORA
        else:
            name = " + ".join(sorted(kinds)) or "unknown"
        if any(m.dora for m in self.modules.values()):
            name += " (DoRA)"
        return name


def read_lora(path: str | Path, *, what: str = "LoRA") -> LoraFile:
    """Every tensor of a kohya-format file, grouped per module; UserError for anything else."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such {what} file")
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"{path}: a {what} must be a .safetensors file, not '{path.suffix or 'no extension'}'")
    header = read_safetensors_header(path)  # the one-line errors for truncated or non-safetensors files
    from safetensors import safe_open

    modules: dict[str, Module] = {}
    unknown: list[str] = []
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():
            name, dot, suffix = key.partition(".")
            if not dot or not name.startswith(("lora_", "lycoris_")):
                unknown.append(key)
                continue
            modules.setdefault(name, Module(name, {})).tensors[suffix] = fh.get_tensor(key)
    if not modules:
        hint = _what_else(list(header.tensors))
        raise UserError(f"{path}: not a kohya-format {what} file ({hint})")
    dtypes = [t.dtype for m in modules.values() for k, t in m.tensors.items() if k != "alpha"]
    dtype = max(set(dtypes), key=dtypes.count) if dtypes else torch.float32
    return LoraFile(path, modules, dict(header.metadata), dtype, unknown)


def _what_else(keys: list[str]) -> str:
    if any(k.startswith(("unet.", "text_encoder.", "text_encoder_2.")) for k in keys):
        return "its keys are in the diffusers/peft format; `easytrain lora convert` turns it into kohya's"
    if any(k.startswith(("model.diffusion_model.", "conditioner.", "cond_stage_model.")) for k in keys):
        return "this is a full checkpoint, not a LoRA"
    first = sorted(keys)[0] if keys else "none"
    return f"no lora_unet_/lora_te_ keys; first key: {first!r}"


def check_output(output: str | Path, inputs: list[str | Path]) -> Path:
    """The output path, refused when it is one of the inputs or is not a .safetensors name."""
    output = Path(output).expanduser()
    if output.suffix.lower() != ".safetensors":
        raise UserError(f"{output}: the output must be a .safetensors file")
    if output.is_dir():
        raise UserError(f"{output}: is a folder; give the output file's name")
    for source in inputs:
        source = Path(source).expanduser()
        if source.exists() and output.exists() and os.path.samefile(source, output):
            raise UserError(f"{output}: is one of the inputs; write to a new file (inputs are never overwritten)")
        if source.resolve() == output.resolve():
            raise UserError(f"{output}: is one of the inputs; write to a new file (inputs are never overwritten)")
    return output


def write_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write kohya tensors with metadata atomically, with fresh sshs_* hashes (as kohya's tools do)."""
    from easytrain.fsutil import atomic_write_bytes
    from easytrain.network.export import serialize

    metadata = {k: v for k, v in metadata.items() if not k.startswith("sshs_")}
    tensors = {k: t.contiguous() for k, t in tensors.items()}
    atomic_write_bytes(path, serialize(tensors, metadata))
    return path


def module_tensors(modules: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{module: {suffix: tensor}} -> flat kohya keys."""
    return {f"{name}.{suffix}": t for name, found in modules.items() for suffix, t in found.items()}


def save_dtype_of(value: str | None, default: torch.dtype) -> torch.dtype:
    """fp16 / bf16 / float (fp32) as asked, else ``default``."""
    if value is None:
        return default
    from easytrain.network.export import save_dtype

    try:
        return save_dtype(value)
    except ValueError as exc:
        raise UserError(str(exc)) from None
