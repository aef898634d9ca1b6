"""Read a kohya-format LoRA file (ours or kohya's) back into a network's adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from easytrain.errors import UserError
from easytrain.network import dora
from easytrain.network.kohya_format import kohya_to_slot, peft_tensors

MAX_LISTED = 25  # per kind of problem; the count of the rest is given


@dataclass
class LoadReport:
    modules_loaded: int
    parts_absent: list[str] = field(default_factory=list)  # parts the file has no modules for (left as initialised)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise UserError(f"{path}: no such LoRA file")
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"{path}: a LoRA to continue from must be a .safetensors file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .safetensors file ({exc})") from None
    return tensors, metadata


def _shape(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _listed(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    shown = [f"{title}: {item}" for item in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        shown.append(f"{title}: ... and {len(items) - MAX_LISTED} more")
    return shown


_FAMILY_MARKERS = {".lora_down.weight": "LoRA/LoCon", ".hada_w1_a": "LoHa", ".lokr_w1": "LoKr"}


def _type_mismatch(network_type: str, tensors: dict) -> list[str]:
    """A one-line hint when the file holds another kind of network than the one being trained."""
    families = {family for marker, family in _FAMILY_MARKERS.items() for key in tensors if marker in key}
    ours = "LoRA/LoCon" if network_type in ("LoRA", "LoCon") else network_type
    if families and ours not in families:
        return [f"the file holds a {' + '.join(sorted(families))} network; this run trains {network_type}"]
    return []


def load_lora_into(network, path: str | Path) -> LoadReport:
    """Copy the weights in ``path`` into ``network``'s adapters.

    Every key must belong to one of the network's modules with the right shape;
    otherwise a UserError lists the offending keys by name and nothing is
    changed. A part (UNet or text encoder) the file has no modules for is left
    as initialised (a UNet-only file continues into a network that also trains
    the text encoder); a part that is present must be complete.
    """
    path = Path(path)
    tensors, _ = _read(path)
    network_type = network.spec.network_type
    slots = {slot.target.kohya_name: slot for slot in network.slots}

    by_module: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in tensors.items():
        module, _, suffix = key.partition(".")
        if module in slots and suffix:
            by_module.setdefault(module, {})[suffix] = tensor
        else:
            unknown.append(key)

    parts_in_file = {slots[m].target.part for m in by_module}
    parts_absent = sorted({s.target.part for s in network.slots} - parts_in_file)

    wrong_shape: list[str] = []
    missing: list[str] = []
    for name, slot in slots.items():
        if slot.target.part in parts_absent:
            continue
        found = by_module.get(name, {})
        expected = {suffix: tuple(p.shape) for suffix, p in peft_tensors(slot, network_type).items()}
        if dora.has_dora(slot.layer):
            expected[dora.PARAM] = tuple(dora.file_tensor(slot.layer).shape)
        for suffix, shape in expected.items():
            key = f"{name}.{suffix}"
            if suffix not in found:
                missing.append(key)
            elif tuple(found[suffix].shape) != shape:
                wrong_shape.append(f"{key}: file has {_shape(found[suffix].shape)}, this network needs {_shape(shape)}")
        for suffix, tensor in found.items():
            if suffix == "alpha":
                if tensor.numel() != 1:
                    wrong_shape.append(f"{name}.alpha: must be a single number, file has {_shape(tensor.shape)}")
            elif suffix not in expected:
                unknown.append(f"{name}.{suffix}")

    problems = _type_mismatch(network_type, tensors) + (
        _listed("wrong shape", wrong_shape)
        + _listed("unknown key", sorted(unknown))
        + _listed("missing key", missing)
    )
    if problems:
        raise UserError(
            f"{path}: does not fit the network being trained ({network_type}, dim {network.spec.dim}, "
            f"alpha {network.spec.alpha:g}, conv dim {network.spec.conv_dim}); set the network type and dims "
            "to those the file was trained with, or start without it",
            problems=problems,
        )

    for name, found in by_module.items():
        alpha = found.get("alpha")
        kohya_to_slot(slots[name], network_type, found, None if alpha is None else float(alpha.float().item()))
        if dora.PARAM in found:
            dora.load_file_tensor(slots[name].layer, found[dora.PARAM])
    return LoadReport(modules_loaded=len(by_module), parts_absent=parts_absent)
