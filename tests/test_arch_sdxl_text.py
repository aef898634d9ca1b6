"""SDXL conditioning: both encoders' penultimate states, bigG's pooled output, time ids, 75-token windows."""

from __future__ import annotations

import pytest
import torch

from easytrain.data.dataset import Batch
from easytrain.families.sdxl.tiny import PROJECTION_DIM, TEXT_WIDTH_1, TEXT_WIDTH_2, build_tiny_sdxl_components
from easytrain.families.sdxl.text import (
    SdxlConditioner,
    SdxlTextCache,
    encode_sdxl_tokens,
    time_ids,
    tokenize_sdxl,
)

LONG = " ".join(["a red circle and a blue square"] * 20)  # well over 150 tokens


@pytest.fixture(scope="module")
def parts():
    parts = build_tiny_sdxl_components()
    for name in ("unet", "text_encoder", "text_encoder_2"):
        parts[name].eval()
    return parts


def _encode(parts, captions, max_token_length):
    encoders = (parts["text_encoder"], parts["text_encoder_2"])
    ids_1, ids_2 = tokenize_sdxl((parts["tokenizer"], parts["tokenizer_2"]), captions, max_token_length)
    with torch.no_grad():
        return encode_sdxl_tokens(encoders, ids_1, ids_2)


def test_short_captions_match_diffusers_sdxl_pipeline(parts):
    """diffusers' encode_prompt is an independent implementation of SDXL's text conditioning."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**parts, add_watermarker=False)
    captions = ["a red circle", "the blue square of a yellow triangle"]
    context, pooled = _encode(parts, captions, 75)
    with torch.no_grad():
        want_context, _, want_pooled, _ = pipe.encode_prompt(captions, do_classifier_free_guidance=False)
    assert context.shape == (2, 77, TEXT_WIDTH_1 + TEXT_WIDTH_2) and pooled.shape == (2, PROJECTION_DIM)
    torch.testing.assert_close(context, want_context)
    torch.testing.assert_close(pooled, want_pooled)


def test_long_captions_in_three_windows(parts):
    context_225, pooled_225 = _encode(parts, [LONG], 225)
    context_75, pooled_75 = _encode(parts, [LONG], 75)
    assert context_225.shape == (1, 3 * 75 + 2, TEXT_WIDTH_1 + TEXT_WIDTH_2)
    # the first window is the caption cut at 75 tokens; the pooled embedding is that window's
    torch.testing.assert_close(context_225[:, :76], context_75[:, :76])
    torch.testing.assert_close(pooled_225, pooled_75)
    assert not torch.allclose(context_225[:, 76:151], context_225[:, 151:226])


def test_second_tokenizer_pads_with_exclamation_mark(parts):
    ids_1, ids_2 = tokenize_sdxl((parts["tokenizer"], parts["tokenizer_2"]), ["a red circle"], 150)
    bang = parts["tokenizer_2"].convert_tokens_to_ids("!")
    eos = parts["tokenizer"].eos_token_id
    assert ids_1.shape == ids_2.shape == (1, 2, 77)
    assert ids_2[0, 0, -1] == bang and ids_1[0, 0, -1] == eos
    assert ids_2[0, 1, 1] == eos  # an empty window still holds an end token


def test_time_ids_from_sizes_crops_and_bucket():
    ids = time_ids([(900, 1600), (1024, 1024)], [(0, 32), (16, 0)], (1216, 832))
    assert ids.tolist() == [[900, 1600, 0, 32, 832, 1216], [1024, 1024, 16, 0, 832, 1216]]


def test_conditioner_feeds_the_unet_and_caches(parts):
    encoders, tokenizers = (parts["text_encoder"], parts["text_encoder_2"]), (parts["tokenizer"], parts["tokenizer_2"])
    batch = Batch(None, torch.zeros(2, 4, 8, 8), ["a red circle", LONG], torch.ones(2), (64, 64),
                  [(80, 64), (64, 64)], [(8, 0), (0, 0)])
    kwargs = dict(max_token_length=225, device=torch.device("cpu"), train_text_encoder=False)
    plain = SdxlConditioner(encoders, tokenizers, cache_text=False, **kwargs)(batch)
    cached = SdxlConditioner(encoders, tokenizers, cache_text=True, **kwargs)
    first, again = cached(batch), cached(batch)
    for out in (first, again):
        torch.testing.assert_close(out["encoder_hidden_states"], plain["encoder_hidden_states"])
        torch.testing.assert_close(out["added_cond_kwargs"]["text_embeds"], plain["added_cond_kwargs"]["text_embeds"])
    assert plain["added_cond_kwargs"]["time_ids"].tolist()[0] == [80, 64, 8, 0, 64, 64]
    with torch.no_grad():
        noise = parts["unet"](torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), **plain).sample
    assert noise.shape == (2, 4, 8, 8) and torch.isfinite(noise).all()


def test_cache_refuses_other_lengths(parts):
    with pytest.raises(ValueError, match="max_token_length must be one of"):
        SdxlTextCache((), (), max_token_length=100, device="cpu")
