"""SDXL's conditioning, as kohya's sdxl_train_network.py computes it.

- Both tokenizers cut a caption of up to 75, 150 or 225 tokens into 75-token
  windows (the second pads with "!"); each window is encoded on its own and the
  states are joined as for SD1 (first BOS, 75 inner states per window, last state).
- The context is the penultimate hidden states of CLIP-L and of bigG, without a
  final layer norm, concatenated: 768 + 1280 = 2048 wide. Clip skip does not apply.
- The pooled embedding is bigG's projected output at the first window's end token.
- The added time ids are each image's original (height, width), the (top, left)
  of its crop and the target (bucket) (height, width).
"""

from __future__ import annotations

from typing import Sequence

import torch

from easytrain.families.base import fill_text_cache
from easytrain.families.clip_text import chunk_count, join_chunk_states, tokenize_captions
from easytrain.host_copy import to_device


def time_ids(original_sizes: Sequence[tuple[int, int]], crop_top_lefts: Sequence[tuple[int, int]],
             bucket: tuple[int, int]) -> torch.Tensor:
    """(batch, 6) float: original h, w, crop top, left, target h, w; ``bucket`` is (width, height)."""
    width, height = bucket
    rows = [[*original, *crop, height, width] for original, crop in zip(original_sizes, crop_top_lefts)]
    return torch.tensor(rows, dtype=torch.float32)


def tokenize_sdxl(tokenizers, captions: list[str], max_token_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids for both encoders, each shaped (batch, n_chunks, 77)."""
    first, second = tokenizers
    return tokenize_captions(first, captions, max_token_length), tokenize_captions(second, captions, max_token_length)


def encode_sdxl_tokens(text_encoders, ids_1: torch.Tensor, ids_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(context (batch, n*75+2, w1+w2), pooled (batch, projection)) for ids of shape (batch, n, 77)."""
    first, second = text_encoders
    batch, n_chunks, width = ids_1.shape
    out_1 = first(ids_1.reshape(batch * n_chunks, width), output_hidden_states=True, return_dict=True)
    out_2 = second(ids_2.reshape(batch * n_chunks, width), output_hidden_states=True, return_dict=True)
    states = []
    for out in (out_1, out_2):
        penultimate = out.hidden_states[-2]
        states.append(join_chunk_states(penultimate.reshape(batch, n_chunks * width, -1), n_chunks))
    # both encoders may compute in different dtypes (a frozen fp16 one beside a trained fp32 one)
    context = torch.cat([states[0], states[1].to(states[0].dtype)], dim=-1)
    pooled = out_2.text_embeds.reshape(batch, n_chunks, -1)[:, 0]
    return context, pooled


class SdxlTextCache:
    """Context and pooled embedding per caption, for frozen text encoders and captions that never change."""

    def __init__(self, text_encoders, tokenizers, *, max_token_length: int, device) -> None:
        chunk_count(max_token_length)  # validates it
        self.text_encoders = text_encoders
        self.tokenizers = tokenizers
        self.max_token_length = max_token_length
        self.device = device
        self.encoded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = list(dict.fromkeys(c for c in captions if c not in self.encoded))
        if missing:
            ids_1, ids_2 = tokenize_sdxl(self.tokenizers, missing, self.max_token_length)
            home = next(self.text_encoders[0].parameters()).device  # after precaching, the encoders are on the CPU
            with torch.no_grad():
                context, pooled = encode_sdxl_tokens(self.text_encoders, ids_1.to(home), ids_2.to(home))
            context, pooled = context.to(self.device), pooled.to(self.device)
            for caption, row, pool in zip(missing, context, pooled):
                self.encoded[caption] = (row, pool)
        rows = [self.encoded[c] for c in captions]
        return torch.stack([r for r, _ in rows]), torch.stack([p for _, p in rows])


class SdxlConditioner:
    """A batch -> the UNet's keyword arguments: ``encoder_hidden_states`` and ``added_cond_kwargs``."""

    def __init__(self, text_encoders, tokenizers, *, max_token_length: int, device, train_text_encoder: bool,
                 cache_text: bool) -> None:
        self.text_encoders = text_encoders
        self.tokenizers = tokenizers
        self.max_token_length = max_token_length
        self.device = device
        self.train_text_encoder = train_text_encoder
        self.cache = (SdxlTextCache(text_encoders, tokenizers, max_token_length=max_token_length, device=device)
                      if cache_text else None)

    def precache(self, captions) -> None:
        fill_text_cache(self.cache, captions)

    def __call__(self, batch) -> dict:
        if self.cache is not None:
            context, pooled = self.cache(batch.captions)
        else:
            ids_1, ids_2 = tokenize_sdxl(self.tokenizers, batch.captions, self.max_token_length)
            with torch.set_grad_enabled(self.train_text_encoder):
                context, pooled = encode_sdxl_tokens(self.text_encoders, to_device(ids_1, self.device),
                                                     to_device(ids_2, self.device))
        ids = to_device(time_ids(batch.original_sizes, batch.crop_top_lefts, batch.bucket), self.device, pooled.dtype)
        return {"encoder_hidden_states": context, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids}}
