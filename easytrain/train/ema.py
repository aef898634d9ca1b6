"""An exponential moving average of the LoRA weights, saved as its own ``-ema`` files.

After each optimizer step: shadow = d * shadow + (1 - d) * weight, with
d = min(decay, (1 + n) / (10 + n)) after n updates (diffusers' EMAModel rule),
so the average does not drag along the random start for long. The shadow is
fp32 on the weights' device; ``state_dict`` carries everything needed for an
exact resume.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

EMA_SUFFIX = "-ema"


def ema_path(lora_path: str | Path) -> Path:
    """``out/name-000002.safetensors`` -> ``out/name-000002-ema.safetensors``."""
    path = Path(lora_path)
    return path.with_name(path.stem + EMA_SUFFIX + path.suffix)


class LoraEMA:
    def __init__(self, parameters: Sequence[torch.nn.Parameter], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be between 0 and 1, got {decay!r}")
        self.parameters = list(parameters)
        self.decay = float(decay)
        self.updates = 0
        self.shadow = [p.detach().float().clone() for p in self.parameters]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights into the average (call after each optimizer step)."""
        decay = self.current_decay()
        for shadow, param in zip(self.shadow, self.parameters):
            shadow.lerp_(param.detach().float(), 1.0 - decay)
        self.updates += 1

    @contextmanager
    @torch.no_grad()
    def swapped(self) -> Iterator[None]:
        """The averaged weights in the network for the duration (to save or sample them)."""
        saved = [p.detach().clone() for p in self.parameters]
        for shadow, param in zip(self.shadow, self.parameters):
            param.copy_(shadow.to(param.dtype))
        try:
            yield
        finally:
            for old, param in zip(saved, self.parameters):
                param.copy_(old)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": [s.detach().cpu() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        shadows = state["shadow"]
        if len(shadows) != len(self.shadow) or any(a.shape != b.shape for a, b in zip(shadows, self.shadow)):
            raise ValueError("the saved EMA does not match this network's weights")
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.shadow = [s.to(device=p.device, dtype=torch.float32).clone() for s, p in zip(shadows, self.shadow)]


def save_ema_lora(network, ema: LoraEMA, lora_path: str | Path, *, dtype, metadata: dict[str, str]) -> Path:
    """Write the averaged weights next to ``lora_path`` as its ``-ema`` file (same format and metadata)."""
    from easytrain.network.export import save_lora

    path = ema_path(lora_path)
    with ema.swapped():
        save_lora(network, path, dtype=dtype, metadata={**metadata, "ss_output_name": path.stem})
    return path
