"""Frozen text encoder + fixed captions: states are encoded once per caption, with the same result."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from _train_helpers import Recorder, tiny_plan

from easytrain.families import clip_text as text
from easytrain.families.sd import family as sd
from easytrain.plan import TrainPlan
from easytrain.train import loop


def train(tmp_path, monkeypatch, *, cached: bool):
    made = []

    class Counting(text.TextStateCache):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    with monkeypatch.context() as patch:
        patch.setattr(sd, "TextStateCache", Counting)
        if not cached:
            patch.setattr(TrainPlan, "text_outputs_cached", property(lambda plan: False))
        plan = tiny_plan(tmp_path, train_parts="unet_only", shuffle_captions=False, epochs=2, save_state=False)
        result = loop.run_training(plan, Recorder())
    return load_file(str(result.final_path)), made


def test_cached_text_states_train_the_same_weights(tmp_path, monkeypatch):
    plain, made_plain = train(tmp_path / "plain", monkeypatch, cached=False)
    cached, made_cached = train(tmp_path / "cached", monkeypatch, cached=True)
    assert made_plain == [] and len(made_cached) == 1
    assert len(made_cached[0].states) == 4  # the four distinct captions, encoded once each
    assert plain.keys() == cached.keys()
    for key in plain:
        torch.testing.assert_close(plain[key].float(), cached[key].float(), rtol=1e-3, atol=1e-5)


def test_no_cache_when_captions_change_or_the_text_encoder_trains(tmp_path):
    assert tiny_plan(tmp_path, train_parts="unet_only", shuffle_captions=False).text_outputs_cached
    assert not tiny_plan(tmp_path / "b", train_parts="unet_only", shuffle_captions=True).text_outputs_cached
    assert not tiny_plan(tmp_path / "c", train_parts="unet_only", shuffle_captions=False,
                         caption_dropout_rate=0.1).text_outputs_cached
    assert not tiny_plan(tmp_path / "d", train_parts="both", shuffle_captions=False).text_outputs_cached
