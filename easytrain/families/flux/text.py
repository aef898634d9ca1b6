"""Captions to what the Flux transformer is conditioned on, as kohya's flux_train_network.py does.

- CLIP-L (Flux only): 77 tokens padded to the length, its pooled output (``y``, 768 wide).
- T5-XXL: ``max_length`` tokens (512 for dev and Chroma, 256 for schnell) padded to the length, its last
  hidden state (``txt``, 4096 wide) and the attention mask. With ``apply_t5_attn_mask`` (kohya's
  option) the mask goes into T5 and the transformer; Chroma always masks, keeping one padding token
  after the text (the end-of-text token's neighbour), as diffusers' and ComfyUI's Chroma pipelines do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass
class FluxText:
    """The conditioning of a batch of captions (on the text encoders' device)."""

    txt: torch.Tensor  # (B, T, context width): T5's last hidden state
    mask: torch.Tensor  # (B, T) 1 for tokens the transformer may attend to
    pooled: Optional[torch.Tensor]  # (B, CLIP width): CLIP-L's pooled output; None for Chroma
    apply_mask: bool  # whether ``mask`` is applied (kohya's apply_t5_attn_mask; always for Chroma)

    def transformer_kwargs(self) -> dict:
        """The text part of FluxTransformer.forward's arguments (``txt_ids`` from model.text_ids)."""
        kwargs = {"txt": self.txt, "txt_attention_mask": self.mask if self.apply_mask else None}
        if self.pooled is not None:
            kwargs["y"] = self.pooled
        return kwargs


def tokenize(tokenizer, captions: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask), padded to ``max_length`` and cut there."""
    encoded = tokenizer(list(captions), padding="max_length", max_length=max_length, truncation=True,
                        return_tensors="pt")
    return encoded.input_ids, encoded.attention_mask


def chroma_mask(mask: torch.Tensor) -> torch.Tensor:
    """Chroma's mask: the tokens, plus the first padding token after them."""
    lengths = mask.sum(dim=1, keepdim=True)
    positions = torch.arange(mask.shape[1], device=mask.device)[None]
    return (positions <= lengths).to(mask.dtype)


def encode_prompts(captions: Sequence[str], *, t5, t5_tokenizer, max_length: int, clip_l=None,
                   clip_tokenizer=None, clip_length: int = 77, apply_t5_attn_mask: bool = False,
                   chroma: bool = False) -> FluxText:
    """Encode ``captions`` with T5 (and CLIP-L when given); gradients flow when the encoders train."""
    device = next(t5.parameters()).device
    ids, mask = tokenize(t5_tokenizer, captions, max_length)
    ids, mask = ids.to(device), mask.to(device)
    if chroma:
        mask = chroma_mask(mask)
    apply = apply_t5_attn_mask or chroma
    txt = t5(input_ids=ids, attention_mask=mask if apply else None).last_hidden_state
    pooled = None
    if clip_l is not None:
        clip_ids, _ = tokenize(clip_tokenizer, captions, clip_length)
        pooled = clip_l(input_ids=clip_ids.to(next(clip_l.parameters()).device)).pooler_output
    return FluxText(txt=txt, mask=mask, pooled=pooled, apply_mask=apply)
