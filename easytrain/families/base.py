"""What an architecture adapter provides. The loop, the network and sampling talk to this only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

# A conditioner turns a batch into the keyword arguments of the UNet's forward besides the noisy
# latents and the timesteps (encoder_hidden_states, and any added conditioning).
Conditioner = Callable[[Any], dict]

PRECACHE_CHUNK = 16  # captions encoded together when a text cache is filled ahead of training


def fill_text_cache(cache, captions: Sequence[str]) -> None:
    """Encode every distinct caption into ``cache`` now, so the text encoders can leave the GPU."""
    distinct = list(dict.fromkeys(captions))
    for start in range(0, len(distinct), PRECACHE_CHUNK):
        cache(distinct[start:start + PRECACHE_CHUNK])


class Family:
    """One architecture family (SD1, SD2, SDXL, ...); subclasses fill in every method."""

    family: str = ""
    # Whether the VAE may encode in fp16 when latents are not cached (the SDXL VAE overflows).
    vae_encodes_in_half: bool = True

    def load(self, path: Path, detection, arch: str, prediction: str, dtype):
        """A BaseModel (model/load.py) from a single file or a diffusers folder, offline."""
        raise NotImplementedError

    def load_builtin_tiny(self, dtype):
        raise NotImplementedError

    def network_models(self, base) -> dict[str, Any]:
        """The modules a network adapts, by part name: "unet", "text_encoder", ... (kohya's order)."""
        raise NotImplementedError

    def network_targets(self, models: dict[str, Any], spec) -> list:
        """The network/targets.Target list for ``spec``: which layers, and their kohya names."""
        raise NotImplementedError

    def conditioner(self, text_encoders: Sequence[Any], tokenizers: Sequence[Any], *, clip_skip: int,
                    max_token_length: int, device, train_text_encoder: bool, cache_text: bool) -> Conditioner:
        """With ``cache_text``, the conditioner also has ``precache(captions)``: after it, batches of those
        captions need no text encoder (kohya's cache_text_encoder_outputs)."""
        raise NotImplementedError

    def render_samples(self, *, unet, vae, text_encoders, tokenizers, prompts, output_dir, name: str, epoch: int,
                       device, dtype, clip_skip: int, prediction_type: str, scheduler_config,
                       max_token_length: int, on_progress=None, step: Optional[int] = None) -> list[Path]:
        """One image per prompt; named by ``step`` when given (samples every N steps), else by ``epoch``."""
        raise NotImplementedError
