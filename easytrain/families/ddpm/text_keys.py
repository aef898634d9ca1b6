"""The UNet's attention: PyTorch SDPA, with the text's keys and values computed once a training step.

With gradient checkpointing each transformer block runs twice a step: forward, then again in the backward
pass to get its activations back. Its cross-attention's keys and values are products of the text (77
tokens a window) that are the same both times, and when the text is fixed (cached encoder outputs, frozen
encoders) nothing needs them recomputed: they are made once, before the blocks, with their graph to the
adapters of ``to_k`` and ``to_v``, and both runs of each block use them. On SDXL at 256 px that is 140
products of 77x2048 by 2048x1280 less a step (0.57 s of a 12-15 s CPU step); at 1024 px on a GPU, little.
The products are the same, on the same inputs, and each adapter gets its gradient from one use as before,
so what is computed does not change (tests/test_text_keys.py trains the same LoRA either way).

Left to diffusers' own processor: a text that trains (its gradient would be summed in another order),
attention with a mask or normalisations, adapters with dropout, torch.compile, and everything outside
checkpointed training (validation, sampling).
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch
import torch.nn.functional as F

ENABLED = True  # tests compare against diffusers' processor alone


class TextKeysOnce:
    """One processor for all of a UNet's attention modules (``install``)."""

    def __init__(self, attentions: list, checkpointed: list) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self._sdpa = AttnProcessor2_0()
        self._attentions = attentions    # the cross-attentions whose keys and values may be made ahead
        self._checkpointed = checkpointed  # the modules whose gradient_checkpointing flag diffusers sets
        # id(text) -> (a weak reference to the text, {id(attention): (keys, values)}): what the last training
        # forward made for each text still alive (the checkpoint's recomputation runs in the backward pass)
        self._held: dict[int, tuple[weakref.ref, dict]] = {}
        self._shareable: list = []
        self._shareable_for: tuple = ()   # the to_k and to_v modules _shareable was worked out for

    def before_forward(self, unet, args, kwargs) -> None:
        """The UNet's forward pre-hook: the keys and values of this step's text, where they can be shared."""
        self._held = {key: entry for key, entry in self._held.items() if entry[0]() is not None}
        text = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        self._held.pop(id(text), None)  # made by an earlier step (a cached text is the same tensor every step)
        if (not ENABLED or not isinstance(text, torch.Tensor) or text.requires_grad or not torch.is_grad_enabled()
                or not unet.training or torch.compiler.is_compiling()
                or not any(getattr(m, "gradient_checkpointing", False) for m in self._checkpointed)):
            return
        self._held[id(text)] = (weakref.ref(text), {
            id(attn): (attn.to_k(text), attn.to_v(text)) for attn in self._shareable_attentions()})

    def _shareable_attentions(self) -> list:
        """The cross-attentions whose ``to_k`` and ``to_v`` draw nothing random; worked out again only when
        those modules change (adapters are injected by replacing them): a look through every adapter takes
        about 10 ms, too much for each step."""
        modules = tuple(id(m) for attn in self._attentions for m in (attn.to_k, attn.to_v))
        if modules != self._shareable_for:
            self._shareable_for = modules
            self._shareable = [attn for attn in self._attentions
                               if _deterministic(attn.to_k) and _deterministic(attn.to_v)]
        return self._shareable

    def held_for(self, attn, text) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """The keys and values made ahead for ``attn`` and ``text``: only with gradients on (the training
        step's forward and its recomputation; a validation pass after the optimizer's step would find them
        stale)."""
        entry = self._held.get(id(text)) if text is not None and torch.is_grad_enabled() else None
        if entry is None or entry[0]() is not text:
            return None
        return entry[1].get(id(attn))

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        held = self.held_for(attn, encoder_hidden_states)
        if held is None or args or kwargs or attention_mask is not None or hidden_states.ndim != 3:
            return self._sdpa(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        # diffusers' AttnProcessor2_0 for a plain cross-attention, with the keys and values held
        key, value = held
        batch_size = encoder_hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def install(unet) -> TextKeysOnce:
    """SDPA attention on every attention module of ``unet``, the text's keys and values made once a step."""
    from diffusers.models.attention_processor import Attention

    attentions = [m for m in unet.modules() if isinstance(m, Attention) and _plain_cross_attention(m)]
    checkpointed = [m for m in unet.modules() if hasattr(m, "gradient_checkpointing")]
    processor = TextKeysOnce(attentions, checkpointed)
    unet.set_attn_processor(processor)
    unet.register_forward_pre_hook(processor.before_forward, with_kwargs=True)
    return processor


def _plain_cross_attention(attn) -> bool:
    return (attn.is_cross_attention and attn.spatial_norm is None and attn.group_norm is None
            and not attn.norm_cross and attn.norm_q is None and attn.norm_k is None)


def _deterministic(module) -> bool:
    """No random draw in ``module`` (no dropout in it or in its adapters): computing it once instead of twice
    leaves the random stream as it was."""
    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout) and sub.p > 0:
            return False
        for name in ("rank_dropout", "module_dropout"):
            values = getattr(sub, name, None)
            if isinstance(values, dict) and any(v for v in values.values()):
                return False
    return True
