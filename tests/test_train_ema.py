"""EMA of the LoRA weights: the average by hand, exact resume, swapping in for a save."""

from __future__ import annotations

import pytest
import torch

from easytrain.train.ema import LoraEMA, ema_path


def test_average_by_hand_with_the_warmup_rule():
    weight = torch.nn.Parameter(torch.tensor([0.0, 10.0]))
    ema = LoraEMA([weight], decay=0.9)
    with torch.no_grad():
        weight.copy_(torch.tensor([1.0, 0.0]))
    ema.update()                                   # n = 0: d = min(0.9, 1/10) = 0.1
    assert ema.shadow[0].tolist() == pytest.approx([0.9, 1.0])
    ema.update()                                   # n = 1: d = 2/11
    d = 2 / 11
    assert ema.shadow[0].tolist() == pytest.approx([d * 0.9 + (1 - d), d * 1.0])
    for _ in range(200):
        ema.update()
    assert ema.current_decay() == 0.9


def test_resume_is_exact_and_swapping_restores_the_weights(tmp_path):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(4))]
    steps = [[torch.randn(3, 4), torch.randn(4)] for _ in range(8)]

    def run(ema, chunk):
        for values in chunk:
            with torch.no_grad():
                for p, v in zip(params, values):
                    p.copy_(v)
            ema.update()

    # from the same start: 8 updates straight, or 3, save, load into a fresh object, 5 more
    start = [torch.randn(3, 4), torch.randn(4)]
    with torch.no_grad():
        for p, v in zip(params, start):
            p.copy_(v)
    whole = LoraEMA(params, 0.99)
    run(whole, steps)
    with torch.no_grad():
        for p, v in zip(params, start):
            p.copy_(v)
    part = LoraEMA(params, 0.99)
    run(part, steps[:3])
    torch.save(part.state_dict(), tmp_path / "ema.pt")
    resumed = LoraEMA(params, 0.5)
    resumed.load_state_dict(torch.load(tmp_path / "ema.pt"))
    run(resumed, steps[3:])
    assert resumed.updates == 8 and resumed.decay == 0.99
    assert all(torch.equal(a, b) for a, b in zip(resumed.shadow, whole.shadow))
    before = [p.detach().clone() for p in params]
    with resumed.swapped():
        assert all(torch.equal(p.detach(), s) for p, s in zip(params, resumed.shadow))
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def test_ema_file_name():
    assert ema_path("out/x-000002.safetensors").as_posix() == "out/x-000002-ema.safetensors"
    with pytest.raises(ValueError):
        LoraEMA([], 1.0)
