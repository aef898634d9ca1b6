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


def test_ema_file_holds_the_average_and_the_network_keeps_its_weights(tmp_path):
    from safetensors import safe_open

    from easytrain.families.sd.targets import apply_network
    from easytrain.network.spec import NetworkSpec
    from easytrain.train.ema import save_ema_lora
    from tests._network_helpers import randomize_adapters, tiny_parts

    parts = tiny_parts()
    network = apply_network(parts["unet"], parts["text_encoder"], NetworkSpec("LoRA", dim=4, alpha=2.0), seed=0)
    ema = LoraEMA(network.trainable_parameters(), 0.9)     # the average of the fresh weights
    randomize_adapters(network)                           # the "trained" weights move away from it
    live = network.kohya_state_dict()
    path = save_ema_lora(network, ema, tmp_path / "x-000001.safetensors", dtype="float",
                         metadata={"ss_output_name": "x"})
    assert path.name == "x-000001-ema.safetensors"
    with safe_open(str(path), "pt") as fh:
        saved = {k: fh.get_tensor(k) for k in fh.keys()}
        assert fh.metadata()["ss_output_name"] == "x-000001-ema"
    ups = [k for k in saved if k.endswith("lora_up.weight")]
    assert ups and all(saved[k].abs().sum() == 0 for k in ups)           # the average still has up = 0
    assert all(torch.equal(network.kohya_state_dict()[k], live[k]) for k in live)   # training weights back
