"""`easytrain lora resize`: SVD per module, strength kept, kohya's rank rules and per-module products."""

from __future__ import annotations

import json

import pytest
import torch

from tests._lora_tools_helpers import modules, product, read, sd1_lora, write


def _kohya_resize(found: dict, new_rank: int) -> torch.Tensor:
    """networks/resize_lora.py for a fixed rank, written out here (kohya is not installed): SVD of up @ down,
    U[:, :r] @ diag(S[:r]) as up, Vh[:r] as down, alpha = (alpha / old rank) * r; returns up @ down * alpha / r."""
    down, up = found["lora_down.weight"].float(), found["lora_up.weight"].float()
    old_rank = down.shape[0]
    scale = float(found["alpha"].float()) / old_rank
    u, s, vh = torch.linalg.svd(up.flatten(1) @ down.flatten(1))
    new_up, new_down = u[:, :new_rank] @ torch.diag(s[:new_rank]), vh[:new_rank]
    new_alpha = scale * new_rank
    return (new_up @ new_down) * (new_alpha / new_rank)


def test_resize_to_its_own_rank_changes_nothing_beyond_fp16_rounding(tmp_path):
    from easytrain.lora_tools.resize import resize_lora

    _network, source = sd1_lora(tmp_path, "LoCon", dtype="fp16")
    out = tmp_path / "same.safetensors"
    report = resize_lora(source, out, rank=4, conv_rank=3)
    assert {m.new_rank for m in report.modules} == {4, 3}
    assert report.worst.kept > 0.9999
    before, after = modules(read(source)[0]), modules(read(out)[0])
    assert set(before) == set(after)
    for name, found in before.items():
        assert after[name]["lora_down.weight"].dtype == torch.float16
        assert after[name]["lora_down.weight"].shape == found["lora_down.weight"].shape
        want = product(found)
        torch.testing.assert_close(product(after[name]), want, rtol=0, atol=float(want.abs().max()) * 2e-3)


def _rank8_in_rank16(tmp_path):
    """A kohya file whose modules are rank 16 but whose products truly have rank 8 (plus fp16-level noise)."""
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for index, (out_f, in_f, conv) in enumerate([(64, 32, False), (96, 48, False), (32, 32, True)]):
        name = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_{'qkv'[index]}"
        left = torch.randn(out_f, 8, generator=gen)
        right = torch.randn(8, in_f * (9 if conv else 1), generator=gen)
        mix = torch.randn(8, 16, generator=gen)
        up = left @ mix                            # (out, 16): rank 8
        down = torch.linalg.pinv(mix) @ right      # (16, in): up @ down = left @ right, rank 8
        down = down + 1e-4 * torch.randn(down.shape, generator=gen)
        tensors[f"{name}.lora_up.weight"] = up if not conv else up[:, :, None, None]
        tensors[f"{name}.lora_down.weight"] = down if not conv else down.reshape(16, in_f, 3, 3)
        tensors[f"{name}.alpha"] = torch.tensor(8.0)
    return write(tmp_path / "rank16.safetensors", tensors, {"ss_network_dim": "16", "ss_network_alpha": "8.0",
                                                              "ss_training_comment": "hand made"})


def test_a_rank_16_file_of_true_rank_8_keeps_its_norm_at_rank_8(tmp_path):
    from easytrain.lora_tools.resize import resize_lora

    source = _rank8_in_rank16(tmp_path)
    out = tmp_path / "eight.safetensors"
    report = resize_lora(source, out, rank=8)
    assert all(m.new_rank == 8 and m.kept >= 0.999 for m in report.modules)
    before, after = modules(read(source)[0]), read(out)
    tensors, metadata = after
    for name, found in before.items():
        got = modules(tensors)[name]
        assert got["lora_down.weight"].shape[0] == 8
        assert float(got["alpha"]) == pytest.approx(8.0 / 16 * 8)  # alpha / rank stays 0.5
        want = product(found)
        assert (product(got) - want).norm() / want.norm() < 1e-3
    assert metadata["ss_network_dim"] == "8" and metadata["ss_network_alpha"] == "4"
    assert metadata["ss_training_comment"].startswith("dimension is resized from 16 to 8; hand made")
    assert metadata["sshs_model_hash"] != read(source)[1].get("sshs_model_hash")


def test_fixed_rank_gives_kohyas_per_module_product(tmp_path):
    from easytrain.lora_tools.resize import resize_lora

    _network, source = sd1_lora(tmp_path, "LoCon")
    out = tmp_path / "two.safetensors"
    report = resize_lora(source, out, rank=2)
    assert 0 < report.mean_kept < 1 and report.worst.kept <= report.mean_kept
    before, after = modules(read(source)[0]), modules(read(out)[0])
    for name, found in before.items():
        # to fp16 rounding, as the issue asks: the SVD differs in its last bits between thread counts
        torch.testing.assert_close(product(after[name]), _kohya_resize(found, 2), rtol=1e-3, atol=1e-5)
    metadata = read(out)[1]
    args = json.loads(metadata["ss_network_args"])
    assert args["conv_dim"] == "2" and float(args["conv_alpha"]) == pytest.approx(5.0 / 3 * 2, rel=1e-5)
    assert metadata["ss_network_dim"] == "2" and float(metadata["ss_network_alpha"]) == pytest.approx(1.5 / 4 * 2)


def _kohya_dynamic_rank(s: torch.Tensor, rule: str, param: float, cap: int) -> int:
    """kohya's index_sv_* + 1, capped at the rank given, as in its rank_resize."""
    if rule == "sv_ratio":
        index = int(torch.sum(s > s[0] / param).item()) - 1
    elif rule == "sv_fro":
        index = int(torch.searchsorted(torch.cumsum(s.pow(2), 0) / float(s.pow(2).sum()), param ** 2))
    else:
        index = int(torch.searchsorted(torch.cumsum(s, 0) / float(s.sum()), param))
    return min(max(0, min(index, len(s) - 1)) + 1, cap)


@pytest.mark.parametrize("rule,param", [("sv_ratio", 3.0), ("sv_fro", 0.9), ("sv_cumulative", 0.8)])
def test_dynamic_rules_pick_kohyas_ranks(tmp_path, rule, param):
    from easytrain.lora_tools import svd
    from easytrain.lora_tools.resize import resize_lora

    gen = torch.Generator().manual_seed(1)
    spectrum = torch.tensor([10.0, 6.0, 3.0, 1.0, 0.5, 0.2])
    matrices = []
    for _ in range(3):
        q1, _ = torch.linalg.qr(torch.randn(24, 6, generator=gen))
        q2, _ = torch.linalg.qr(torch.randn(20, 6, generator=gen))
        matrices.append(q1 @ torch.diag(spectrum * float(torch.rand(1, generator=gen) + 0.5)) @ q2.T)
    tensors = {}
    for index, matrix in enumerate(matrices):
        name = f"lora_te_text_model_encoder_layers_{index}_mlp_fc1"
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        tensors.update({f"{name}.lora_up.weight": u @ torch.diag(s), f"{name}.lora_down.weight": vh,
                        f"{name}.alpha": torch.tensor(6.0)})
    source = write(tmp_path / "six.safetensors", tensors)
    report = resize_lora(source, tmp_path / "dyn.safetensors", rank=5, rule=rule, param=param)
    for module, matrix in zip(sorted(report.modules, key=lambda m: m.name), matrices):
        s = torch.linalg.svdvals(matrix)
        assert module.new_rank == _kohya_dynamic_rank(s, rule, param, 5)
        assert svd.choose_rank(s, 5, rule, param) == module.new_rank
    assert read(tmp_path / "dyn.safetensors")[1]["ss_network_dim"] == "Dynamic"


def test_resize_refuses_lycoris_files_and_writes_nothing(tmp_path, capsys):
    from easytrain.cli import main

    _network, source = sd1_lora(tmp_path, "LoHa")
    out = tmp_path / "small.safetensors"
    assert main(["lora", "resize", str(source), "--rank", "2", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "LoHa file; resize works on LoRA and LoCon" in err and err.count("\n") == 1
    assert not out.exists()
    _network, lora = sd1_lora(tmp_path, "LoRA")
    assert main(["lora", "resize", str(lora), "--rank", "2", "-o", str(lora)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert main(["lora", "resize", str(lora), "--rank", "2", "-o", str(out), "--plain", "--verbose"]) == 0
    printed = capsys.readouterr().out
    count = len(modules(read(lora)[0]))
    assert f"Resized {count} modules from rank 4 to 2." in printed and "Frobenius norm kept: mean" in printed
