"""The validation loss on the real tiny model: the same number for the same weights, another after a change."""

from __future__ import annotations

import contextlib

import pytest
import torch

from _network_helpers import randomize_adapters, tiny_parts
from _train_helpers import make_colour_dataset
from easytrain.data.buckets import BucketSettings
from easytrain.data.scan import scan_image_folder
from easytrain.data.validation_split import split_off
from easytrain.families.sd.targets import apply_network
from easytrain.network.spec import NetworkSpec
from easytrain.families.clip_text import encode_tokens, tokenize_captions
from easytrain.train.validation import ValidationSet


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from diffusers import DDPMScheduler

    parts = tiny_parts()
    images = make_colour_dataset(tmp_path_factory.mktemp("validation") / "images", size=64)
    _, held = split_off(scan_image_folder(images), 0.25, seed=3)   # one image
    vae = parts["vae"].eval()
    settings = BucketSettings(resolution=(64, 64), enable_bucket=True, min_reso=64, max_reso=128, step=64,
                              no_upscale=True)
    from easytrain.families.ddpm.objective import DdpmObjective

    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000)
    objective = DdpmObjective(scheduler, "epsilon", scaling_factor=0.18215, device="cpu")
    validation = ValidationSet(held, settings, batch_size=1, seed=11, model_latents=objective.model_latents,
                               device="cpu", encode=lambda pixels: vae.encode(pixels).latent_dist.mean)
    network = apply_network(parts["unet"], parts["text_encoder"], NetworkSpec("LoRA", 4, 4.0), seed=1)
    unet, text_encoder, tokenizer = parts["unet"], parts["text_encoder"], parts["tokenizer"]

    def conditioner(batch):
        return {"encoder_hidden_states": encode_tokens(text_encoder, tokenize_captions(tokenizer, batch.captions, 75), 1)}

    def loss():
        return validation.loss(objective, unet, conditioner, autocast=contextlib.nullcontext,
                               modules=(unet, text_encoder))

    return validation, network, unet, loss


def test_two_evaluations_of_the_same_weights_agree_exactly(setup):
    validation, _, _, loss = setup
    assert validation.images == 1 and len(validation.batches) == 1
    first = loss()
    assert first == loss() and first > 0


def test_evaluation_leaves_training_state_alone(setup):
    _, _, unet, loss = setup
    unet.train()
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    loss()
    assert torch.equal(state, torch.random.get_rng_state())          # the training's noise is not consumed
    assert unet.training and all(m.training for m in unet.modules())   # back in training mode


def test_the_loss_changes_when_the_weights_do(setup):
    _, network, _, loss = setup
    before = loss()
    randomize_adapters(network, scale=0.05)
    after = loss()
    assert after != before
