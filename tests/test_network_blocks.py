"""Block-wise dims and learning rates: kohya's block numbering, presets, and what the file then holds."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from easytrain.network.blocks import block_index, block_settings, lr_weights, per_block, side_weights


@pytest.mark.parametrize("name,index", [
    ("lora_unet_down_blocks_0_attentions_0_proj_in", 1),            # IN01
    ("lora_unet_down_blocks_0_resnets_1_conv1", 2),                 # IN02
    ("lora_unet_down_blocks_0_downsamplers_0_conv", 3),             # IN03
    ("lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_k", 5),
    ("lora_unet_down_blocks_3_resnets_1_conv2", 11),                # IN11
    ("lora_unet_mid_block_attentions_0_proj_out", 12),              # M00
    ("lora_unet_up_blocks_0_resnets_0_conv1", 13),                  # OUT00
    ("lora_unet_up_blocks_0_upsamplers_0_conv", 15),
    ("lora_unet_up_blocks_3_attentions_2_proj_out", 24),            # OUT11
    ("lora_te_text_model_encoder_layers_0_mlp_fc1", -1),
])
def test_block_index_is_kohyas(name, index):
    assert block_index(name) == index


def test_full_size_sd15_transformers_sit_in_kohyas_blocks():
    from easytrain.network.targets import unet_targets
    from tests._network_helpers import full_sd15_on_meta

    unet, _ = full_sd15_on_meta()
    per = Counter(block_index(t.kohya_name) for t in unet_targets(unet, with_convs=False))
    # 16 transformers of 12 modules: IN01 IN02 IN04 IN05 IN07 IN08, M00, OUT03-OUT11
    assert per == {i: 12 for i in (1, 2, 4, 5, 7, 8, 12, 16, 17, 18, 19, 20, 21, 22, 23, 24)}


def test_presets_and_lists_as_kohya():
    cosine = side_weights("cosine")
    assert cosine[0] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.0)
    assert cosine[5] == pytest.approx(math.sin(math.pi * (6 / 11) / 2))
    assert side_weights("sine") == pytest.approx(list(reversed(cosine)))
    assert side_weights("linear+0.5")[0] == pytest.approx(0.5) and side_weights("linear+0.5")[-1] == pytest.approx(1.5)
    assert side_weights("zeros") == [0.0] * 12
    assert side_weights("0.5,0.25") == [0.5, 0.25] + [1.0] * 10       # short lists are padded with 1
    assert len(side_weights(",".join(["2"] * 20))) == 12                # long ones are cut
    weights = lr_weights("0.5,0.05", "0", None, zero_threshold=0.1)
    assert weights[:3] == (0.5, 0.0, 1.0) and weights[12] == 0.0 and weights[13:] == (1.0,) * 12
    assert lr_weights(None, None, None) is None
    with pytest.raises(ValueError, match="needs 25 values"):
        per_block("1,2,3", int)
    with pytest.raises(ValueError, match="'x' is not a number"):
        side_weights("1,x")


def test_block_dims_and_zero_lr_blocks_shape_the_network_and_its_file():
    from easytrain.network.build import apply_network
    from easytrain.network.spec import NetworkSpec
    from tests._network_helpers import tiny_parts

    dims = ["4"] * 25
    dims[2] = "0"                                                   # IN02: no modules
    dims[16] = "2"                                                  # OUT03: rank 2
    alphas = ["1"] * 25
    alphas[16] = "3"
    blocks = block_settings(block_dims=",".join(dims), block_alphas=",".join(alphas), mid_lr_weight="0",
                            up_lr_weight="1,1,1,0.5", conv_block_dims=",".join(["2"] * 25))
    spec = NetworkSpec("LoCon", dim=8, alpha=8.0, conv_dim=4, conv_alpha=1.0, blocks=blocks)
    parts = tiny_parts()
    network = apply_network(parts["unet"], parts["text_encoder"], spec, seed=0)
    sd = network.kohya_state_dict()
    unet_names = {k.split(".")[0] for k in sd if k.startswith("lora_unet_")}
    assert unet_names and not any(block_index(n) == 12 for n in unet_names)      # lr 0: the whole block left out
    in02 = [n for n in unet_names if block_index(n) == 2]
    assert in02 and all(sd[f"{n}.lora_down.weight"].shape[-1] == 3 for n in in02)  # dim 0: only its 3x3 convs stay
    for name in unet_names:
        index, rank = block_index(name), sd[f"{name}.lora_down.weight"].shape[0]
        conv = sd[f"{name}.lora_down.weight"].ndim == 4 and sd[f"{name}.lora_down.weight"].shape[-1] == 3
        assert rank == (2 if conv or index == 16 else 4)
        assert sd[f"{name}.alpha"].item() == (1.0 if conv else float(alphas[index]))
    te = [k for k in sd if k.startswith("lora_te_") and k.endswith("lora_down.weight")]
    assert te and all(sd[k].shape[0] == 8 for k in te)            # the text encoder keeps the network dim
    groups = network.parameter_groups(1e-3, 1e-4)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["unet_block16"] == pytest.approx(5e-4) and lrs["unet_block1"] == pytest.approx(1e-3)
    assert lrs["text_encoder"] == 1e-4 and "unet_block12" not in lrs and "unet" not in lrs
    assert sum(len(g["params"]) for g in groups) == len(network.trainable_parameters())
    assert all(torch.is_tensor(p) for g in groups for p in g["params"])
