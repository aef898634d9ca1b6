"""Attach a LoRA/LoCon/LoHa/LoKr network to a UNet and text encoder with peft.

The adapters are injected in place: the UNet and the text encoder keep their
classes and forward signatures. Only adapter weights require grad.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from easytrain.errors import UserError
from easytrain.network.spec import NetworkSpec
from easytrain.network.targets import Target

ADAPTER_NAME = "default"


@dataclass(frozen=True)
class Slot:
    """One adapted layer: where it is, what kohya calls it, and its peft layer."""

    target: Target
    layer: nn.Module  # the peft tuner layer that replaced the original module
    dim: int
    alpha: float

    def parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.layer.named_parameters() if not name.startswith("base_layer.")]


class Network:
    """The adapters of one training run, across the UNet and the text encoder(s)."""

    def __init__(self, spec: NetworkSpec, models: dict[str, nn.Module | None], slots: list[Slot]):
        self.spec = spec
        self.models = dict(models)  # part name -> module: "unet", "text_encoder", ...
        self.slots = slots

    @property
    def unet(self) -> nn.Module | None:
        return self.models.get("unet")

    @property
    def text_encoder(self) -> nn.Module | None:
        return self.models.get("text_encoder")

    def slots_of(self, part: str) -> list[Slot]:
        return [s for s in self.slots if s.target.part == part]

    def parameters_of(self, part: str) -> list[nn.Parameter]:
        return [p for s in self.slots_of(part) for p in s.parameters()]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for s in self.slots for p in s.parameters()]

    def parameter_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        """One optimizer group per adapted part (a part without adapters has no group).

        With block-wise learning rates the UNet has one group per block instead
        (``unet_block4``: unet_lr times the block's weight), as kohya's.
        """
        groups = []
        for part in self.models:
            blocks = self.spec.blocks
            if part == "unet" and blocks is not None and blocks.lr_weights is not None:
                groups += self._block_groups(float(unet_lr))
                continue
            params = self.parameters_of(part)
            if params:
                groups.append({"params": params, "lr": float(unet_lr if part == "unet" else text_encoder_lr),
                               "name": part})
        return groups

    def _block_groups(self, unet_lr: float) -> list[dict]:
        by_block: dict[int, list[nn.Parameter]] = {}
        for slot in self.slots_of("unet"):
            by_block.setdefault(self.spec.blocks.index_of(slot.target.kohya_name), []).extend(slot.parameters())
        return [{"params": params, "lr": unet_lr * self.spec.blocks.lr_weight(index), "name": f"unet_block{index}"}
                for index, params in sorted(by_block.items())]

    def cast_base(self, dtype: torch.dtype, leave=()) -> None:
        """Cast the frozen base weights of the models to ``dtype``; adapters stay fp32; the models in
        ``leave`` (computing in ``dtype`` from weights stored otherwise: model/cast_on_use.py) stay as they are.

        Use this instead of ``model.to(dtype)``, which would also round the
        adapter weights. Parameters are cast in place (``.data``), so existing
        references (an optimizer) stay valid.
        """
        adapter_ids = {id(p) for p in self.trainable_parameters()}
        for model in self.models.values():
            if model is None or any(model is left for left in leave):
                continue
            for module in model.modules():
                for param in module._parameters.values():
                    if param is None or id(param) in adapter_ids or not param.is_floating_point():
                        continue
                    param.data = param.data.to(dtype)
                for name, buf in module._buffers.items():
                    if buf is not None and buf.is_floating_point():
                        module._buffers[name] = buf.to(dtype)
        for p in self.trainable_parameters():
            if p.dtype != torch.float32:
                p.data = p.data.float()

    def kohya_state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The network as kohya/LyCORIS keys, on the CPU, in ``dtype``."""
        from easytrain.network.kohya_format import slot_to_kohya

        from easytrain.network import dora

        out: dict[str, torch.Tensor] = {}
        for slot in self.slots:
            tensors = slot_to_kohya(slot, self.spec.network_type)
            if dora.has_dora(slot.layer):
                tensors[f"{slot.target.kohya_name}.{dora.PARAM}"] = dora.file_tensor(slot.layer)
            for key, tensor in tensors.items():
                out[key] = tensor.detach().to(device="cpu", dtype=dtype).contiguous()
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{part} modules={len(self.slots_of(part))}" for part in self.models)
        return f"Network({self.spec.network_type}, dim={self.spec.dim}, alpha={self.spec.alpha}, {counts})"


def _exact(path: str) -> str:
    """A peft pattern key that matches exactly this module path."""
    return re.escape(path)


def _peft_config(spec: NetworkSpec, targets: list[Target]):
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    sizes = {t.path: spec.size_of(t) for t in targets}
    own = [t for t in targets if sizes[t.path] != (spec.dim, float(spec.alpha))]
    common = dict(
        r=spec.dim,
        target_modules=[t.path for t in targets],
        rank_pattern={_exact(t.path): sizes[t.path][0] for t in own},
        alpha_pattern={_exact(t.path): sizes[t.path][1] for t in own},
    )
    if spec.network_type in ("LoRA", "LoCon"):
        # init_lora_weights=True is kohya's init: down kaiming-uniform(a=sqrt(5)), up zero.
        return LoraConfig(lora_alpha=spec.alpha, lora_dropout=0.0, bias="none", init_lora_weights=True, **common)
    if spec.network_type == "LoHa":
        return LoHaConfig(alpha=spec.alpha, init_weights=True, **common)
    return LoKrConfig(alpha=spec.alpha, init_weights=True, **common)


def _inject(model: nn.Module, spec: NetworkSpec, targets: list[Target]) -> list[Slot]:
    from peft import inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    from easytrain.model.lean_imports import peft_without_bitsandbytes

    peft_without_bitsandbytes()
    if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} already carries adapters; build the network on a fresh model")
    inject_adapter_in_model(_peft_config(spec, targets), model, adapter_name=ADAPTER_NAME)
    slots = []
    for target in targets:
        layer = model.get_submodule(target.path)
        if not isinstance(layer, BaseTunerLayer):
            raise RuntimeError(f"peft did not adapt {target.path}")
        dim, alpha = spec.size_of(target)
        slots.append(Slot(target, layer, dim, float(alpha)))
    return slots


@contextmanager
def _seeded(seed: int | None):
    """Seed torch for adapter initialisation without disturbing the caller's RNG state."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _check_block_layout(targets: list[Target], spec: NetworkSpec) -> None:
    """Block-wise settings numbered for another UNet would silently apply to nothing: refuse them."""
    if spec.blocks is None:
        return
    outside = [t.kohya_name for t in targets if t.part == "unet" and spec.blocks.index_of(t.kohya_name) < 0]
    if outside:
        layout = spec.blocks.layout
        raise UserError(f"block-wise settings: the model's UNet modules ({outside[0]}, ...) are not in "
                        f"{layout.label}'s block numbering; is the architecture right for this model?")


def build_network(models: dict[str, nn.Module | None], targets: list[Target], spec: NetworkSpec,
                  seed: int | None = None) -> Network:
    """Inject adapters at ``targets`` (an architecture adapter chose them); freeze everything else.

    A part that is not trained gets no adapters at all (and stays frozen).
    """
    _check_block_layout(targets, spec)
    # Block-wise dims of 0 (or block learning rates of 0) leave those modules out, as kohya does.
    targets = [t for t in targets if spec.size_of(t)[0] > 0]
    for model in models.values():
        if model is not None:
            model.requires_grad_(False)
    slots: list[Slot] = []
    with _seeded(seed):
        for part, model in models.items():
            part_targets = [t for t in targets if t.part == part]
            if part_targets:
                slots += _inject(model, spec, part_targets)
    if spec.dora:
        from easytrain.network import dora

        for slot in slots:
            dora.attach(slot.layer)
    network = Network(spec, models, slots)
    for p in network.trainable_parameters():
        p.requires_grad_(True)
        if p.dtype != torch.float32:
            p.data = p.data.float()
    return network
