"""Long captions in 75-token chunks and clip skip, checked against hand-built cases."""

import pytest
import torch

from easytrain.families.sd.tiny import _TINY_WORDS, build_tiny_components, build_tiny_tokenizer
from easytrain.families.clip_text import chunk_input_ids, encode_tokens, tokenize_captions


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


# Words the tiny vocabulary holds as one token each (so token i is word i).
SINGLE = [w for w in _TINY_WORDS if w != "green"]


def words(n):
    return [SINGLE[i % len(SINGLE)] for i in range(n)]


def word_ids(tokenizer, ws):
    return tokenizer.convert_tokens_to_ids([w + "</w>" for w in ws])


def test_225_tokens_become_three_wrapped_chunks(tokenizer):
    ws = words(170)
    ids = tokenize_captions(tokenizer, [" ".join(ws)], 225)
    assert ids.shape == (1, 3, 77)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    toks = word_ids(tokenizer, ws)
    assert ids[0, 0].tolist() == [bos] + toks[:75] + [eos]
    assert ids[0, 1].tolist() == [bos] + toks[75:150] + [eos]
    assert ids[0, 2].tolist() == [bos] + toks[150:] + [eos] * 56


def test_overlong_caption_is_cut_at_225_and_short_one_fills_one_window(tokenizer):
    ws = words(300)
    ids = tokenize_captions(tokenizer, [" ".join(ws), "red circle"], 225)
    toks = word_ids(tokenizer, ws)
    assert ids[0, 2].tolist() == [tokenizer.bos_token_id] + toks[150:225] + [tokenizer.eos_token_id]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert ids[1, 0, :4].tolist() == [bos] + word_ids(tokenizer, ["red", "circle"]) + [eos]
    assert ids[1, 1].tolist() == [bos] + [eos] * 76
    assert tokenize_captions(tokenizer, ["red"], 75).shape == (1, 1, 77)


def test_sd2_style_padding_closes_every_window_with_eos():
    bos, eos, pad = 8, 9, 0
    caption = list(range(100, 180))                                  # 80 tokens
    ids = torch.tensor([bos] + caption + [eos] + [pad] * (152 - 82))
    chunks = chunk_input_ids(ids, n_chunks=2, eos_id=eos, pad_id=pad)
    assert chunks[0].tolist() == [bos] + caption[:75] + [eos]        # last was pad: becomes EOS
    assert chunks[1].tolist() == [bos] + caption[75:] + [eos] + [pad] * 70
    empty = torch.tensor([bos, 5, eos] + [pad] * 149)
    assert chunk_input_ids(empty, n_chunks=2, eos_id=eos, pad_id=pad)[1].tolist() == [bos, eos] + [pad] * 75


def test_hidden_states_are_joined_as_kohya_does(tokenizer):
    te = build_tiny_components()["text_encoder"].eval()
    ids = tokenize_captions(tokenizer, [" ".join(words(170)), "a red circle"], 225)
    with torch.no_grad():
        joined = encode_tokens(te, ids, clip_skip=2)
        assert joined.shape == (2, 227, 32)
        per_chunk = []
        for k in range(3):
            out = te(ids[:, k], output_hidden_states=True)
            per_chunk.append(te.final_layer_norm(out.hidden_states[-2]))
        expected = torch.cat([per_chunk[0][:, :1]] + [c[:, 1:76] for c in per_chunk] + [per_chunk[2][:, 76:]], dim=1)
        assert torch.allclose(joined, expected, atol=1e-6)

        short = tokenize_captions(tokenizer, ["a red circle"], 75)
        last = encode_tokens(te, short, clip_skip=1)
        assert torch.allclose(last, te(short[:, 0]).last_hidden_state, atol=1e-6)
        assert not torch.allclose(last, encode_tokens(te, short, clip_skip=2))

