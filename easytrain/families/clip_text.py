"""Captions to text-encoder conditioning: long captions in 75-token chunks, clip skip.

CLIP sees 77 positions (BOS, 75 tokens, EOS). A caption of up to 150 or 225
tokens is tokenized once, cut into 75-token chunks, each chunk wrapped in
its own BOS/EOS and encoded separately; the hidden states are then joined
as kohya's sd-scripts does (train_util.get_input_ids / get_hidden_states):
the first chunk's BOS, the 75 inner states of every chunk, the last chunk's
final state. A 225-token caption thus gives 1 + 3 * 75 + 1 = 227 states.
"""

from __future__ import annotations

import torch

from easytrain.model.cast_on_use import computing_dtype

CHUNK = 75          # caption tokens per CLIP window
MAX_TOKEN_LENGTHS = (75, 150, 225)


def chunk_count(max_token_length: int) -> int:
    if max_token_length not in MAX_TOKEN_LENGTHS:
        raise ValueError(f"max_token_length must be one of {MAX_TOKEN_LENGTHS}, got {max_token_length}")
    return max_token_length // CHUNK


def chunk_input_ids(ids: torch.Tensor, *, n_chunks: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """One tokenized caption (length n_chunks * 75 + 2) -> (n_chunks, 77) windows."""
    bos, last = ids[:1], ids[-1:]
    chunks = []
    for k in range(n_chunks):
        chunk = torch.cat([bos, ids[1 + k * CHUNK: 1 + (k + 1) * CHUNK], last])
        if pad_id != eos_id:
            # SD2-style padding ("!" as pad): each window must still close with an EOS,
            # and a window holding no caption tokens starts with one.
            if chunk[-2] != eos_id and chunk[-2] != pad_id:
                chunk[-1] = eos_id
            if chunk[1] == pad_id:
                chunk[1] = eos_id
        chunks.append(chunk)
    return torch.stack(chunks)


def tokenize_captions(tokenizer, captions: list[str], max_token_length: int = 225) -> torch.Tensor:
    """Token ids shaped (batch, n_chunks, 77) for ``captions``."""
    n_chunks = chunk_count(max_token_length)
    ids = tokenizer(list(captions), padding="max_length", truncation=True,
                    max_length=n_chunks * CHUNK + 2, return_tensors="pt").input_ids
    return torch.stack([
        chunk_input_ids(row, n_chunks=n_chunks, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
        for row in ids
    ])


def final_layer_norm(text_encoder) -> torch.nn.Module:
    inner = getattr(text_encoder, "module", text_encoder)      # DDP wrapper
    inner = getattr(inner, "text_model", inner)                 # transformers < 5 layout
    return inner.final_layer_norm


def join_chunk_states(states: torch.Tensor, n_chunks: int) -> torch.Tensor:
    """(batch, n_chunks * 77, dim) -> (batch, n_chunks * 75 + 2, dim), kohya's join."""
    width = CHUNK + 2
    parts = [states[:, :1]]
    for k in range(n_chunks):
        parts.append(states[:, k * width + 1: k * width + 1 + CHUNK])
    parts.append(states[:, -1:])
    return torch.cat(parts, dim=1)


def encode_tokens(text_encoder, input_ids: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
    """Hidden states for (batch, n_chunks, 77) ids.

    clip_skip N takes hidden state N from the end and applies the final layer
    norm; clip_skip 1 is the encoder's last hidden state.
    """
    batch, n_chunks, width = input_ids.shape
    flat = input_ids.reshape(batch * n_chunks, width)
    out = text_encoder(flat, output_hidden_states=True, return_dict=True)
    norm = final_layer_norm(text_encoder)
    # The hidden states may be fp32 while a frozen bf16/fp16 norm is not (autocast leaves layer norm alone on the CPU).
    states = norm(out.hidden_states[-clip_skip].to(computing_dtype(norm)))
    states = states.reshape(batch, n_chunks * width, states.shape[-1])
    return join_chunk_states(states, n_chunks)


class TextStateCache:
    """Hidden states per caption, for a frozen text encoder and captions that never change.

    Each distinct caption is encoded once and kept on the device; later batches
    only stack. Only valid when the text encoder is not trained and captions are
    not shuffled (the caller decides).
    """

    def __init__(self, text_encoder, tokenizer, *, clip_skip: int, max_token_length: int, device) -> None:
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.clip_skip = clip_skip
        self.max_token_length = max_token_length
        self.device = device
        self.states: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(c for c in captions if c not in self.states))
        if missing:
            home = next(self.text_encoder.parameters()).device   # after precaching, the encoder is on the CPU
            ids = tokenize_captions(self.tokenizer, missing, self.max_token_length).to(home)
            with torch.no_grad():
                encoded = encode_tokens(self.text_encoder, ids, self.clip_skip).to(self.device)
            for caption, row in zip(missing, encoded):
                self.states[caption] = row
        return torch.stack([self.states[c] for c in captions])
