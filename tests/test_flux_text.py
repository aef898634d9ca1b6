"""Captions to Flux conditioning: CLIP-L pooled, T5 hidden states and the T5 mask, through the tiny models."""

from __future__ import annotations

import pytest
import torch

from easytrain.families.flux.load import load_flux
from easytrain.families.flux.model import image_ids, pack_latents, text_ids
from easytrain.families.flux.text import chroma_mask, encode_prompts
from easytrain.families.flux.tiny import tiny_flux_paths

CAPTIONS = ["a photo of a red circle", "a blue square on white background"]


@pytest.fixture(scope="module")
def dev():
    return load_flux(tiny_flux_paths().dev, dtype=torch.float32)


def test_dev_conditioning_drives_the_transformer(dev):
    text = encode_prompts(CAPTIONS, t5=dev.t5, t5_tokenizer=dev.t5_tokenizer, max_length=16,
                          clip_l=dev.clip_l, clip_tokenizer=dev.clip_tokenizer)
    assert text.txt.shape == (2, 16, dev.config.context_in_dim)
    assert text.pooled.shape == (2, dev.config.vec_in_dim)
    assert text.mask[0].tolist() == [1] * 7 + [0] * 9  # six words and </s>
    kwargs = text.transformer_kwargs()
    assert kwargs["txt_attention_mask"] is None and "y" in kwargs
    latents = torch.randn(2, 16, 4, 4)
    out = dev.transformer(img=pack_latents(latents), img_ids=image_ids(2, 4, 4), txt_ids=text_ids(2, 16),
                          timesteps=torch.tensor([0.3, 0.7]), guidance=torch.ones(2), **kwargs)
    assert out.shape == (2, 4, 64) and torch.isfinite(out).all()


def test_t5_mask_makes_the_padding_length_irrelevant(dev):
    short, long = (encode_prompts(CAPTIONS[:1], t5=dev.t5, t5_tokenizer=dev.t5_tokenizer, max_length=n,
                                  apply_t5_attn_mask=True) for n in (8, 16))
    torch.testing.assert_close(short.txt[:, :7], long.txt[:, :7])
    assert short.transformer_kwargs()["txt_attention_mask"] is not None


def test_chroma_keeps_one_padding_token():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert chroma_mask(mask).tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    chroma = load_flux(tiny_flux_paths().chroma, dtype=torch.float32)
    text = encode_prompts(CAPTIONS, t5=chroma.t5, t5_tokenizer=chroma.t5_tokenizer, max_length=16, chroma=True)
    assert text.pooled is None and text.apply_mask
    assert text.mask[0].sum() == 8  # six words, </s> and one padding token
