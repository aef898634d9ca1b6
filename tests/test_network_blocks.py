"""Block-wise dims and learning rates: kohya's block numbering, presets, and what the file then holds."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from easytrain.errors import UserError
from easytrain.families.sd.blocks import SD
from easytrain.families.sdxl.blocks import SDXL
from easytrain.network.blocks import block_index, block_settings, cut_lists, lr_weights, per_block, side_weights


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
    ("lora_unet_input_blocks_4_1_proj_in", -1),                     # an SDXL name is in no SD block
])
def test_block_index_is_kohyas(name, index):
    assert block_index(name, SD) == index


def test_full_size_sd15_transformers_sit_in_kohyas_blocks():
    from easytrain.families.sd.targets import unet_targets
    from tests._network_helpers import full_sd15_on_meta

    unet, _ = full_sd15_on_meta()
    per = Counter(block_index(t.kohya_name, SD) for t in unet_targets(unet, with_convs=False))
    # 16 transformers of 12 modules: IN01 IN02 IN04 IN05 IN07 IN08, M00, OUT03-OUT11
    assert per == {i: 12 for i in (1, 2, 4, 5, 7, 8, 12, 16, 17, 18, 19, 20, 21, 22, 23, 24)}


def test_presets_and_lists_as_kohya():
    cosine = side_weights("cosine", SD)
    assert cosine[0] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.0)
    assert cosine[5] == pytest.approx(math.sin(math.pi * (6 / 11) / 2))
    assert side_weights("sine", SD) == pytest.approx(list(reversed(cosine)))
    linear = side_weights("linear+0.5", SD)
    assert linear[0] == pytest.approx(0.5) and linear[-1] == pytest.approx(1.5)
    assert side_weights("zeros", SD) == [0.0] * 12
    assert side_weights("0.5,0.25", SD) == [0.5, 0.25] + [1.0] * 10       # short lists are padded with 1
    assert len(side_weights(",".join(["2"] * 20), SD)) == 12                # long ones are cut
    weights = lr_weights("0.5,0.05", "0", None, SD, zero_threshold=0.1)
    assert weights[:3] == (0.5, 0.0, 1.0) and weights[12] == 0.0 and weights[13:] == (1.0,) * 12
    assert lr_weights(None, None, None, SD) is None
    with pytest.raises(ValueError, match="needs 25 values"):
        per_block("1,2,3", SD, int)
    with pytest.raises(ValueError, match="'x' is not a number"):
        side_weights("1,x", SD)


def test_block_dims_and_zero_lr_blocks_shape_the_network_and_its_file():
    from easytrain.families.sd.targets import apply_network
    from easytrain.network.spec import NetworkSpec
    from tests._network_helpers import tiny_parts

    dims = ["4"] * 25
    dims[2] = "0"                                                   # IN02: no modules
    dims[16] = "2"                                                  # OUT03: rank 2
    alphas = ["1"] * 25
    alphas[16] = "3"
    blocks = block_settings(SD, block_dims=",".join(dims), block_alphas=",".join(alphas), mid_lr_weight="0",
                            up_lr_weight="1,1,1,0.5", conv_block_dims=",".join(["2"] * 25))
    spec = NetworkSpec("LoCon", dim=8, alpha=8.0, conv_dim=4, conv_alpha=1.0, blocks=blocks)
    parts = tiny_parts()
    network = apply_network(parts["unet"], parts["text_encoder"], spec, seed=0)
    sd = network.kohya_state_dict()
    unet_names = {k.split(".")[0] for k in sd if k.startswith("lora_unet_")}
    assert unet_names and not any(block_index(n, SD) == 12 for n in unet_names)      # lr 0: the whole block left out
    in02 = [n for n in unet_names if block_index(n, SD) == 2]
    assert in02 and all(sd[f"{n}.lora_down.weight"].shape[-1] == 3 for n in in02)  # dim 0: only its 3x3 convs stay
    for name in unet_names:
        index, rank = block_index(name, SD), sd[f"{name}.lora_down.weight"].shape[0]
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


# ---- SDXL: kohya's 23 blocks (0 embedding, 1-9 input_blocks 0-8, 10-12 middle_block 0-2, 13-21 output_blocks 0-8,
# 22 out), numbered from the Stability-style names (networks/lora.py get_block_index with is_sdxl)

SDXL_FILE_LINE = "needs 23 values on SDXL (1 time embedding, 9 input, 3 middle, 9 output, 1 out), got 25"


@pytest.mark.parametrize("name,index", [
    ("lora_unet_input_blocks_1_0_in_layers_2", 2),
    ("lora_unet_input_blocks_3_0_op", 4),
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 5),
    ("lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_2", 9),
    ("lora_unet_middle_block_0_emb_layers_1", 10),
    ("lora_unet_middle_block_1_proj_in", 11),
    ("lora_unet_middle_block_2_out_layers_3", 12),
    ("lora_unet_output_blocks_0_1_transformer_blocks_0_attn2_to_out_0", 13),
    ("lora_unet_output_blocks_2_2_conv", 15),
    ("lora_unet_output_blocks_8_0_skip_connection", 21),
    ("lora_unet_time_embed_0", 0),
    ("lora_unet_label_emb_0_0", 0),
    ("lora_unet_out_2", 22),
    ("lora_te1_text_model_encoder_layers_0_mlp_fc1", -1),
    ("lora_unet_down_blocks_1_attentions_0_proj_in", -1),           # an SD name is in no SDXL block
])
def test_sdxl_block_index_is_kohyas(name, index):
    assert block_index(name, SDXL) == index


def test_sdxl_weights_and_counts_as_kohya():
    cosine = side_weights("cosine", SDXL)
    assert len(cosine) == 9 and cosine[0] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.0)
    assert cosine[3] == pytest.approx(math.sin(math.pi * (5 / 8) / 2))
    weights = lr_weights("cosine", "0.5", "1,1,0.05", SDXL, zero_threshold=0.1)
    assert len(weights) == 23 and weights[0] == weights[22] == 1.0      # the embedding and out blocks keep 1
    assert weights[1:10] == pytest.approx(cosine[:8] + [0.0])
    assert weights[10:13] == (0.5, 1.0, 1.0)                          # three middle blocks, padded with 1
    assert weights[13:22] == (1.0, 1.0, 0.0) + (1.0,) * 6
    assert per_block(",".join(["4"] * 23), SDXL, int) == (4,) * 23
    with pytest.raises(ValueError) as caught:
        per_block(",".join(["4"] * 25), SDXL, int)
    assert str(caught.value) == SDXL_FILE_LINE
    assert cut_lists({"down_lr_weight": ",".join(["1"] * 12), "mid_lr_weight": "1", "up_lr_weight": "cosine"},
                     SDXL) == ["down_lr_weight: SDXL has 9 down blocks; the last 3 of the 12 weights are ignored, "
                               "as kohya does"]


def _left_out(name: str, kind: str) -> bool:
    """What the settings of the next test leave out, by kohya's rules, named without the block numbers."""
    from easytrain.network.targets import CONV

    return (name.startswith("lora_unet_middle_block_1_")                              # its lr weight is 0
            or (name.startswith("lora_unet_input_blocks_4_") and kind != CONV)        # block dim 0
            or (name.startswith("lora_unet_input_blocks_1_") and kind == CONV))       # conv block dim 0


def test_sdxl_block_dims_shape_the_network_and_its_file(tmp_path):
    from safetensors import safe_open

    from easytrain.families.registry import family_for
    from easytrain.families.sdxl.tiny import build_tiny_sdxl_components, tiny_sdxl_paths
    from easytrain.network.build import build_network
    from easytrain.network.export import save_lora
    from easytrain.network.targets import CONV
    from _train_helpers import tiny_plan

    dims, alphas, conv_dims = ["4"] * 23, ["4"] * 23, ["2"] * 23
    dims[5] = "0"                                                   # input_blocks 4: its linear layers left out
    dims[13], alphas[13] = "2", "1"                                 # output_blocks 0: rank 2, alpha 1
    conv_dims[2] = "0"                                              # input_blocks 1: its 3x3 convs left out
    plan = tiny_plan(tmp_path, base_model=str(tiny_sdxl_paths().single_file), architecture="auto",
                     network_type="LoCon", conv_dim=4, conv_alpha=1.0, train_parts="unet_only",
                     block_dims=",".join(dims), block_alphas=",".join(alphas), conv_block_dims=",".join(conv_dims),
                     mid_lr_weight="1,0,1", up_lr_weight="0.5")
    assert plan.network.block_layout == "sdxl"                      # 'auto': read from the file's header
    spec = plan.network.spec()
    parts = build_tiny_sdxl_components()
    models = {part: parts[part] for part in ("unet", "text_encoder", "text_encoder_2")}
    targets = family_for("sdxl").network_targets(models, spec)
    kinds = {t.kohya_name: t.kind for t in targets}
    network = build_network(models, targets, spec, seed=0)
    path = save_lora(network, tmp_path / "blocks.safetensors", dtype="float")

    with safe_open(str(path), framework="pt") as handle:
        downs = {k.split(".")[0]: handle.get_tensor(k) for k in handle.keys() if k.endswith(".lora_down.weight")}
        alpha = {name: handle.get_tensor(f"{name}.alpha").item() for name in downs}
    assert set(downs) == {name for name, kind in kinds.items() if not _left_out(name, kind)}
    assert any(n.startswith("lora_unet_input_blocks_4_") for n in downs)          # its 3x3 convs stay
    assert "lora_unet_input_blocks_1_0_emb_layers_1" in downs and "lora_unet_middle_block_0_in_layers_2" in downs
    for name, down in downs.items():
        conv, out0 = kinds[name] == CONV, name.startswith("lora_unet_output_blocks_0_")
        assert down.shape[0] == (2 if conv or out0 else 4), name
        assert alpha[name] == (1.0 if conv or out0 else 4.0), name
    lrs = {g["name"]: g["lr"] for g in network.parameter_groups(1e-3, 0.0)}
    assert lrs["unet_block13"] == pytest.approx(5e-4) and lrs["unet_block5"] == pytest.approx(1e-3)
    assert "unet_block11" not in lrs and "unet" not in lrs


def test_block_settings_numbered_for_another_unet_are_refused():
    from easytrain.families.registry import family_for
    from easytrain.families.sdxl.tiny import build_tiny_sdxl_components
    from easytrain.network.build import build_network
    from easytrain.network.spec import NetworkSpec

    parts = build_tiny_sdxl_components()
    spec = NetworkSpec("LoRA", dim=4, alpha=4.0, train_text_encoder=False,
                       blocks=block_settings(SD, block_dims=",".join(["4"] * 25)))
    models = {"unet": parts["unet"]}
    with pytest.raises(UserError, match="not in SD1/SD2's block numbering"):
        build_network(models, family_for("sdxl").network_targets(models, spec), spec)


def test_a_wrong_count_for_sdxl_is_one_line_naming_the_key(tmp_path, capsys):
    import json

    from easytrain import questions as Q
    from easytrain.cli import main as cli_main
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths
    from easytrain.plan import block_layout_of
    from _train_helpers import tiny_answers

    sd_count = ",".join(["4"] * 25)
    question = Q.BY_ID["block_dims"]
    assert Q.check_value(question, sd_count, {"base_model": "m.safetensors", "architecture": "sdxl"}) == SDXL_FILE_LINE
    assert Q.check_value(question, ",".join(["4"] * 23), {"base_model": "m.safetensors", "architecture": "sd1"}) \
        == "needs 25 values on SD1/SD2 (12 down, 1 middle, 12 up), got 23"
    # an architecture not known yet: either count, and the plan holds the lists against the file's
    assert Q.check_value(question, sd_count, {"base_model": "missing.safetensors", "architecture": "auto"}) is None
    assert "or 23 values on SDXL" in Q.check_value(question, "1,2", {"architecture": "auto"})
    sdxl_file = str(tiny_sdxl_paths().single_file)
    answers = tiny_answers(tmp_path, base_model=sdxl_file, architecture="auto")
    with pytest.raises(UserError) as caught:
        block_layout_of(answers, sdxl_file, {"conv_block_alphas": sd_count})
    assert str(caught.value) == f"conv_block_alphas: {SDXL_FILE_LINE} ({sdxl_file} is SDXL)"
    assert block_layout_of(answers, sdxl_file, {"up_lr_weight": ",".join(["1"] * 12)}) == (
        "sdxl", ["up_lr_weight: SDXL has 9 up blocks; the last 3 of the 12 weights are ignored, as kohya does"])

    for arch in ("sdxl", "auto"):                   # 'auto' reads the file's header, as `check` does
        data = {**answers.to_dict(), "architecture": arch, "block_dims": sd_count}
        (tmp_path / "a.json").write_text(json.dumps(data), encoding="utf-8")
        assert cli_main(["check", str(tmp_path / "a.json")]) == 2
        err = capsys.readouterr().err
        assert f"  - block_dims: {SDXL_FILE_LINE}\n" in err and "Traceback" not in err
