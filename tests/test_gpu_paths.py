"""Issue 29's GPU-only defects, each shown on the CPU.

No test here needs a GPU. Where the defect is a device or a dtype, the test
checks where (or in which dtype) each tensor is made: a forward hook records
the dtype a layer computed in, a forward pre-hook records the device of the
ids an encoder is given, a fake "cuda" device or the meta device stands in
for the GPU, and torch.cuda's functions are replaced by recorders.
"""

from __future__ import annotations

import torch

from easytrain.sampling import SamplePrompt

STEPS = 2


def _decoder_dtypes(vae) -> list:
    """The dtype of each output of the VAE decoder's last conv (a forward hook): what the decode computed in."""
    seen = []
    vae.decoder.conv_out.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_sd_samples_decode_outside_autocast_in_the_vaes_precision(tmp_path):
    """Sampling runs under the run's autocast; the VAE decode must not (bf16 autocast on the CPU stands in
    for fp16 autocast on a GPU: before the fix the decoder computed in bf16, now in the VAE's fp32)."""
    from easytrain.families.sd.tiny import build_tiny_components
    from easytrain.families.sd.sampling import generate_samples

    parts = build_tiny_components(0)
    seen = _decoder_dtypes(parts["vae"])
    unet_dtypes = []
    parts["unet"].conv_out.register_forward_hook(lambda _m, _i, out: unet_dtypes.append(out.dtype))
    generate_samples(unet=parts["unet"], vae=parts["vae"], text_encoder=parts["text_encoder"],
                     tokenizer=parts["tokenizer"], prompts=[SamplePrompt("a red circle", width=64, height=64,
                                                                         seed=1, steps=STEPS)],
                     output_dir=tmp_path, name="s", epoch=1, device="cpu", dtype=torch.bfloat16)
    assert set(unet_dtypes) == {torch.bfloat16}      # the denoising loop still runs under autocast
    assert seen == [torch.float32]


def test_sdxl_samples_decode_outside_autocast_and_are_not_black(tmp_path):
    from PIL import Image

    from easytrain.families.sdxl.tiny import build_tiny_sdxl_components
    from easytrain.families.sdxl.sampling import generate_sdxl_samples

    parts = build_tiny_sdxl_components()
    seen = _decoder_dtypes(parts["vae"])
    paths = generate_sdxl_samples(
        unet=parts["unet"], vae=parts["vae"], text_encoders=(parts["text_encoder"], parts["text_encoder_2"]),
        tokenizers=(parts["tokenizer"], parts["tokenizer_2"]),
        prompts=[SamplePrompt("a red square", negative="green", width=64, height=64, seed=3, steps=STEPS)],
        output_dir=tmp_path, name="x", epoch=1, device="cpu", dtype=torch.bfloat16,
        scheduler_config=parts["scheduler"].config)
    assert seen == [torch.float32]
    with Image.open(paths[0]) as image:
        assert image.size == (64, 64) and max(image.convert("L").getextrema()) > 0


def test_an_fp16_vae_marked_force_upcast_decodes_in_fp32():
    from types import SimpleNamespace

    from easytrain.sampling.decode import vae_decode_dtype

    half = SimpleNamespace(dtype=torch.float16, config=SimpleNamespace(force_upcast=True))
    assert vae_decode_dtype(half) == torch.float32
    assert vae_decode_dtype(SimpleNamespace(dtype=torch.float16, config=SimpleNamespace(force_upcast=False))) \
        == torch.float16
    assert vae_decode_dtype(SimpleNamespace(dtype=torch.float32, config=SimpleNamespace())) == torch.float32


# ---- a CUDA wheel that does not match the driver ------------------------------------------------------------


def _fake_nvidia_smi(monkeypatch, *, driver="535.104.05", cuda="12.2"):
    """nvidia-smi as a machine with an NVIDIA GPU answers it (easytrain.machine asks through _nvidia_smi)."""
    from easytrain import machine

    def smi(*args):
        if args and args[0].startswith("--query-gpu=name,driver_version"):
            return f"NVIDIA GeForce RTX 3090, {driver}\n"
        if not args:
            return f"| NVIDIA-SMI {driver}   Driver Version: {driver}   CUDA Version: {cuda}     |\n"
        return None

    monkeypatch.setattr(machine, "_nvidia_smi", smi)
    monkeypatch.setattr(machine, "has_cuda_gpu", lambda: True)


def test_mismatch_messages_name_the_fix():
    from easytrain.train.device_checks import DriverInfo, cuda_mismatch_message

    driver = DriverInfo("NVIDIA GeForce RTX 3090", "535.104.05", (12, 2))
    cpu_wheel = cuda_mismatch_message(driver, cuda_available=False, torch_version="2.9.0+cpu", torch_cuda=None)
    assert "CPU-only build" in cpu_wheel and "https://download.pytorch.org/whl/cu121" in cpu_wheel
    too_new = cuda_mismatch_message(driver, cuda_available=False, torch_version="2.9.0+cu128", torch_cuda="12.8")
    assert "570.26" in too_new and "https://download.pytorch.org/whl/cu121" in too_new
    assert cuda_mismatch_message(driver, cuda_available=True, torch_version="2.9.0", torch_cuda="12.8") is None
    assert cuda_mismatch_message(None, cuda_available=False, torch_version="2.9.0", torch_cuda=None) is None


def test_training_says_so_when_nvidia_smi_sees_a_gpu_that_torch_does_not(monkeypatch):
    """The accelerator set-up on a machine whose torch sees no GPU (this one, or torch.cuda.is_available
    forced False) while nvidia-smi (faked) lists one: a warning with the fix comes before training."""
    from easytrain.train import events as ev
    from easytrain.train import setup

    _fake_nvidia_smi(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    said = []
    setup.make_accelerator("no", said.append)
    warnings = [e.text for e in said if isinstance(e, ev.Message) and e.level == "warning"]
    assert any("NVIDIA GeForce RTX 3090" in w and "would run on the" in w for w in warnings), said


def test_the_wizard_set_up_says_so_after_installing(monkeypatch, capsys):
    import subprocess
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    import wizard

    ran = []

    def fake_run(command, **kwargs):
        ran.append(command)
        return subprocess.CompletedProcess(command, 1, stdout="nvidia-smi shows X but this PyTorch is the CPU-only "
                                                              "build. Fix: install the CUDA build\n", stderr="")

    monkeypatch.setattr(wizard, "has_nvidia_gpu", lambda: True)
    monkeypatch.setattr(wizard.subprocess, "run", fake_run)
    assert wizard.check_torch_sees_gpu() is False
    assert ran and ran[0][1:] == ["-m", "easytrain.train.device_checks"]
    assert "CPU-only build" in capsys.readouterr().out
    monkeypatch.setattr(wizard, "has_nvidia_gpu", lambda: False)
    assert wizard.check_torch_sees_gpu() is True


# ---- TF32 ------------------------------------------------------------------------------------------------------


def test_tf32_is_enabled_on_gpus_that_have_it(monkeypatch):
    """A fake CUDA device (torch.device("cuda") needs no GPU) and a faked compute capability."""
    from easytrain.train.device_checks import enable_tf32

    before = torch.get_float32_matmul_precision()
    try:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
        assert enable_tf32(torch.device("cuda")) is False
        assert torch.get_float32_matmul_precision() == before
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
        assert enable_tf32(torch.device("cpu")) is False
        assert enable_tf32(torch.device("cuda")) is True
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_the_run_set_up_enables_tf32_on_its_gpu(monkeypatch):
    """make_accelerator on a (faked) Ampere GPU: TF32 on. PartialState is faked to hand out a cuda device."""
    from easytrain.train import setup

    before = torch.get_float32_matmul_precision()
    enabled = []
    monkeypatch.setattr(setup.device_checks, "enable_tf32", lambda device: enabled.append(device) or True)
    try:
        setup.make_accelerator("no", lambda e: None)
    finally:
        torch.set_float32_matmul_precision(before)
    assert enabled and enabled[0].type == "cpu"       # asked with the run's device (here the CPU: not enabled)


# ---- the text-encoder cache's miss path after precaching ------------------------------------------------------


def _record_input_devices(module) -> list:
    """The device of the ids each forward of ``module`` is given (a forward pre-hook)."""
    seen = []
    module.register_forward_pre_hook(lambda _m, args, kwargs: seen.append((args[0] if args else
                                                                           kwargs["input_ids"]).device),
                                     with_kwargs=True)
    return seen


def test_sd_text_cache_miss_encodes_where_the_encoder_is():
    """The training device is the meta device (standing in for the GPU); the encoder has left it for the CPU
    after precaching, as the loop moves it. A caption not precached must be encoded on the CPU, where the
    encoder's weights are, and its states handed out on the training device. Before the fix the ids went to
    the training device while the weights stayed on the CPU (on a GPU: a device-mismatch error)."""
    from easytrain.families.sd.family import ClipConditioner
    from easytrain.families.sd.tiny import build_tiny_components

    parts = build_tiny_components(0)
    meta = torch.device("meta")
    conditioner = ClipConditioner(parts["text_encoder"], parts["tokenizer"], clip_skip=1, max_token_length=75,
                                  device=meta, train_text_encoder=False, cache_text=True)
    seen = _record_input_devices(parts["text_encoder"])
    conditioner.precache(["a red circle"])
    states = conditioner(_Batch(["a red circle", "a blue square"]))["encoder_hidden_states"]
    assert seen == [torch.device("cpu"), torch.device("cpu")]
    assert states.device == meta and states.shape[0] == 2


def test_sdxl_text_cache_miss_encodes_where_the_encoders_are():
    from easytrain.families.sdxl.text import SdxlConditioner
    from easytrain.families.sdxl.tiny import build_tiny_sdxl_components

    parts = build_tiny_sdxl_components()
    meta = torch.device("meta")
    encoders = (parts["text_encoder"], parts["text_encoder_2"])
    conditioner = SdxlConditioner(encoders, (parts["tokenizer"], parts["tokenizer_2"]), max_token_length=75,
                                  device=meta, train_text_encoder=False, cache_text=True)
    seen = [_record_input_devices(encoder) for encoder in encoders]
    conditioner.precache(["a red square"])
    out = conditioner(_Batch(["a red square", "a green circle"], bucket=(64, 64)))
    assert seen == [[torch.device("cpu")] * 2] * 2
    assert out["encoder_hidden_states"].device == meta and out["added_cond_kwargs"]["text_embeds"].device == meta


class _Batch:
    def __init__(self, captions, bucket=(64, 64)):
        self.captions = captions
        self.bucket = bucket
        self.original_sizes = [(64, 64)] * len(captions)
        self.crop_top_lefts = [(0, 0)] * len(captions)


# ---- queue: the previous job's model is freed before the next loads ------------------------------------------


def _live_tensors() -> tuple[int, int]:
    """(parameters, tensors) among the objects the garbage collector tracks: what is alive now."""
    import gc

    objects = gc.get_objects()
    return (sum(1 for o in objects if isinstance(o, torch.nn.Parameter)),
            sum(1 for o in objects if isinstance(o, torch.Tensor)))


def test_a_queue_frees_each_jobs_model_before_the_next_starts(tmp_path, monkeypatch):
    """Counted with gc.get_objects() when each job starts, with automatic collection off (so the count does not
    depend on when the collector's thresholds happen to trip). bf16 mixed precision: accelerate then wraps each
    prepared model's forward in a method bound to the model, a reference cycle. The first job fails (the loss
    diverges): its traceback's frames hold its model too. Before the fix the second job started beside the
    first job's 500-odd parameters, on a GPU beside its weights."""
    import gc

    from _robust_helpers import write_answers
    from easytrain.commands import train as train_command

    queue = tmp_path / "queue"
    short = dict(epochs=1, save_every_n_epochs=0, mixed_precision="bf16", log_every_n_steps=1)
    first = write_answers(queue, "01.json", output_folder="o1", output_name="first", unet_lr=1e12,
                          max_grad_norm=0.0, **short)
    second = write_answers(queue, "02.json", output_folder="o2", output_name="second", **short)
    gc.collect()
    baseline = _live_tensors()
    counts = []
    real_train_one = train_command.train_one

    def counting_train_one(path, **kwargs):
        counts.append(_live_tensors())
        return real_train_one(path, **kwargs)

    monkeypatch.setattr(train_command, "train_one", counting_train_one)
    gc.disable()
    try:
        code = train_command.run_jobs([str(first), str(second)], plain=True)
        after = _live_tensors()
    finally:
        gc.enable()
    assert code == 2 and (queue / "o2" / "second.safetensors").is_file()   # a failed job: exit 2 (issue 28)
    assert counts[0][0] == baseline[0] == 0
    assert counts[1][0] == 0, f"{counts[1][0]} parameters of the failed first job alive when the second started"
    assert after[0] == 0 and after[1] <= counts[1][1] + 2


def test_bench_gpu_step_frees_each_case_before_the_next(monkeypatch):
    """bench/gpu_step.py's cases one after another (its tiny arch on the CPU, bf16 so accelerate wraps the
    forward): no parameter of a finished case is alive when run_case returns, counted with gc.get_objects()
    and automatic collection off. Before the fix `del trainer` freed nothing (the reference cycle)."""
    import gc
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    bench = Path(__file__).resolve().parents[1] / "bench"
    monkeypatch.syspath_prepend(str(bench))
    import gpu_step

    args = SimpleNamespace(arch="tiny", resolution=64, dim=4, alpha=4.0, steps=1, warmup=0)
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            result = gpu_step.run_case(gpu_step.Case("bf16", 1, False), torch.device("cpu"), args,
                                       count_flops=False)
            assert _live_tensors()[0] == 0
    finally:
        gc.enable()
    assert result.seconds_per_step > 0 and "gpu_step" in sys.modules


# ---- peak memory: the steps' own, each phase's own, and the estimate beside it ------------------------------


class _FakeCuda:
    """torch.cuda's two peak-memory functions over a scripted allocation history."""

    def __init__(self):
        self.current = 0
        self.peak = 0
        self.resets = 0

    def allocate(self, size):
        self.current += size
        self.peak = max(self.peak, self.current)

    def free(self, size):
        self.current -= size

    def max_memory_allocated(self, device=None):
        return self.peak

    def reset_peak_memory_stats(self, device=None):
        self.resets += 1
        self.peak = self.current


def test_peaks_keep_loading_caching_and_sampling_out_of_the_steps():
    """A fake CUDA device (torch.device("cuda") needs no GPU) and a recorder for torch.cuda's counters. Before
    the fix StepEnded carried max_memory_allocated as it stood, never reset: the VAE's 6 GB caching peak."""
    from types import SimpleNamespace

    from easytrain.train.memory_peaks import GIB, PeakMemory

    cuda = _FakeCuda()
    peaks = PeakMemory(torch.device("cuda"), cuda)
    cuda.allocate(3 * GIB)                   # loading: the UNet
    peaks.phase_started()
    cuda.allocate(6 * GIB); cuda.free(6 * GIB)      # caching latents: the VAE at 1024 px
    assert peaks.phase_ended("caching latents") == 9 * GIB
    peaks.steps_started()
    cuda.allocate(2 * GIB); cuda.free(2 * GIB)      # a step's activations
    assert peaks.step_peak() == 5 * GIB
    peaks.phase_started()
    cuda.allocate(4 * GIB); cuda.free(4 * GIB)      # sampling
    assert peaks.phase_ended("sampling") == 7 * GIB
    cuda.allocate(1 * GIB); cuda.free(1 * GIB)      # a smaller step after sampling
    assert peaks.step_peak() == 5 * GIB
    estimate = SimpleNamespace(tensors=4 * GIB, total_gib=5.2)
    lines = peaks.report(estimate)
    assert lines[0].startswith("peak GPU memory of the training steps: 5.00 GiB") and "estimated 4.00 GiB" in lines[0]
    assert "125%" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == ["peak GPU memory while caching latents",
                                                          "peak GPU memory while sampling"]
    on_cpu = PeakMemory(torch.device("cpu"))
    assert on_cpu.report(estimate) == [] and on_cpu.step_peak() is None


def test_the_run_compares_the_steps_peak_with_checks_estimate_only_for_full_size_models(tmp_path):
    from _train_helpers import tiny_plan
    from easytrain.memory_estimate import MEMORY
    from easytrain.families.sd.tiny import build_tiny_components
    from easytrain.train.memory_peaks import run_estimate

    plan = tiny_plan(tmp_path)
    assert run_estimate(plan, "sd1", build_tiny_components(0)["unet"]) is None       # tiny: no estimate
    full = torch.nn.Linear(1, 1)
    full.weight = torch.nn.Parameter(torch.empty(MEMORY["sd1"].parameters["unet"], device="meta"))
    found = run_estimate(plan, "sd1", full)
    assert found is not None and found.setup.arch == "sd1" and found.setup.batch == plan.data.batch_size


def test_the_loop_reports_the_steps_peak_not_the_caching_phases(tmp_path, monkeypatch):
    """The training loop on the CPU with PeakMemory on a fake CUDA counter: the caching phases' PhaseEnded carry
    their own peaks, every StepEnded the steps' (counted from a reset after caching), and the run ends with the
    report. The fake counter is driven by the VAE's forward (caching: +6 GiB, freed) and the UNet's (+1 GiB)."""
    from _train_helpers import Recorder, tiny_plan
    from easytrain.train import events as ev
    from easytrain.train import wiring
    from easytrain.train.loop import run_training
    from easytrain.train.memory_peaks import GIB, PeakMemory

    cuda = _FakeCuda()
    monkeypatch.setattr(wiring, "PeakMemory", lambda device: PeakMemory(torch.device("cuda"), cuda))
    from diffusers import AutoencoderKL, UNet2DConditionModel

    real_encode, real_unet = AutoencoderKL.encode, UNet2DConditionModel.forward

    def encode(self, *args, **kwargs):
        cuda.allocate(6 * GIB); cuda.free(6 * GIB)
        return real_encode(self, *args, **kwargs)

    def forward(self, *args, **kwargs):
        cuda.allocate(GIB); cuda.free(GIB)
        return real_unet(self, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", encode)
    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    events = Recorder()
    run_training(tiny_plan(tmp_path, epochs=1, save_every_n_epochs=0), events)
    caching = [e for e in events.of(ev.PhaseEnded) if e.phase == "caching latents"]
    assert caching[0].peak_memory_bytes == 6 * GIB
    assert {e.peak_memory_bytes for e in events.of(ev.StepEnded)} == {GIB}
    assert any(e.text.startswith("peak GPU memory of the training steps: 1.00 GiB") for e in events.of(ev.Message))


# ---- torch.compile: a recompile failing at a later step -----------------------------------------------------


def test_a_recompile_failing_at_a_later_step_is_caught_and_the_run_trains_on(tmp_path, monkeypatch):
    """A stand-in for torch.compile whose graph works for the first shapes and fails when a later step brings
    a shape that needs a recompile (here: its third call, as a later bucket's would). Before the fix only the
    first step was guarded: the run failed with the compiler's error. Now that step is redone eagerly with the
    generators as they were, and the weights are those of an uncompiled run."""
    from safetensors.torch import load_file

    from _train_helpers import Recorder, fast_plan
    from easytrain.train import events as ev
    from easytrain.train.loop import run_training

    settings = dict(epochs=2, save_every_n_epochs=0, cache_latents="off", flip_aug=True, noise_offset=0.05,
                    save_precision="float")
    plain = run_training(fast_plan(tmp_path / "plain", **settings), Recorder())

    class RecompileFails(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module, self.calls = module, 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("inductor: recompiling for a new shape failed")
            return self.module(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: RecompileFails(module))
    events = Recorder()
    result = run_training(fast_plan(tmp_path / "compiled", **settings, torch_compile=True), events)
    warnings = [m.text for m in events.of(ev.Message) if m.level == "warning"]
    assert any("recompiling for a new shape failed" in w for w in warnings)
    expected = load_file(plain.final_path)
    for key, value in load_file(result.final_path).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)


# ---- host syncs: pinned, non-blocking copies; batches loaded ahead -----------------------------------------


class _PinRecorder:
    """Tensor.pin_memory and Tensor.to replaced by recorders; the meta device stands in for the GPU (added to
    host_copy.PINNED_DEVICE_TYPES), so each host-to-"GPU" copy is seen: pinned first? non_blocking?"""

    def __init__(self, monkeypatch):
        from easytrain import host_copy

        self.pinned: set[int] = set()
        self.copies: list[tuple[bool, bool]] = []      # (from pinned memory, non_blocking)
        real_to = torch.Tensor.to
        recorder = self

        def pin_memory(tensor, *args, **kwargs):
            recorder.pinned.add(id(tensor))
            return tensor

        def to(tensor, *args, **kwargs):
            target = args[0] if args else kwargs.get("device")
            if isinstance(target, (str, torch.device)) and torch.device(target).type == "meta" \
                    and tensor.device.type == "cpu":
                recorder.copies.append((id(tensor) in recorder.pinned, bool(kwargs.get("non_blocking"))))
            return real_to(tensor, *args, **kwargs)

        monkeypatch.setattr(host_copy, "PINNED_DEVICE_TYPES", ("cuda", "meta"))
        monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
        monkeypatch.setattr(torch.Tensor, "to", to)


def test_sdxl_conditioning_copies_to_the_gpu_pinned_and_non_blocking(monkeypatch):
    """The per-step copies of the SDXL conditioner (the time ids; the token ids when the encoders are not
    cached) go from pinned memory without blocking. Before the fix they were plain blocking copies."""
    from easytrain.families.sdxl.text import SdxlConditioner
    from easytrain.families.sdxl.tiny import build_tiny_sdxl_components

    parts = build_tiny_sdxl_components()
    encoders = (parts["text_encoder"], parts["text_encoder_2"])
    conditioner = SdxlConditioner(encoders, (parts["tokenizer"], parts["tokenizer_2"]), max_token_length=75,
                                  device=torch.device("meta"), train_text_encoder=False, cache_text=True)
    conditioner.precache(["a red square"])
    pins = _PinRecorder(monkeypatch)
    out = conditioner(_Batch(["a red square"], bucket=(64, 64)))
    assert out["added_cond_kwargs"]["time_ids"].device.type == "meta"
    assert pins.copies == [(True, True)]


def test_sd_conditioning_copies_the_token_ids_pinned_and_non_blocking(monkeypatch):
    from easytrain.families.sd.family import ClipConditioner
    from easytrain.families.sd.tiny import build_tiny_components

    parts = build_tiny_components(0)
    conditioner = ClipConditioner(parts["text_encoder"].to("meta"), parts["tokenizer"], clip_skip=1,
                                  max_token_length=75, device=torch.device("meta"), train_text_encoder=False,
                                  cache_text=False)
    pins = _PinRecorder(monkeypatch)
    conditioner(_Batch(["a red circle", "a blue square"]))
    assert pins.copies == [(True, True)]


def _dataset(tmp_path):
    from _train_helpers import fast_plan
    from easytrain.data.dataset import TrainDataset

    plan = fast_plan(tmp_path, flip_aug=True, cache_latents="off")
    return TrainDataset(plan.train_scan, plan.reg_scan, plan.bucket_settings, flip_aug=True, seed=1,
                        shuffle_captions=True)


def test_batches_come_to_the_gpu_pinned_non_blocking_and_loaded_ahead(tmp_path, monkeypatch):
    """Without cached latents the loader runs AHEAD batches ahead in a thread on a GPU (the meta stand-in),
    each tensor copied from pinned memory without blocking; the batches are those load_batch makes, in order."""
    from easytrain.train import prefetch

    dataset = _dataset(tmp_path)
    batches = dataset.epoch_batches(1, 4)
    expected = [dataset.load_batch(spec, 1) for spec in batches]
    pins = _PinRecorder(monkeypatch)
    loader = prefetch.BatchLoader(dataset, batches, 1, start=1, device=torch.device("meta"))
    assert loader.ahead == prefetch.AHEAD and loader._queue is not None
    got = [loader.get(i) for i in range(1, len(batches))]
    assert [b.captions for b in got] == [b.captions for b in expected[1:]]
    assert all(b.pixel_values.device.type == "meta" and b.loss_weights.device.type == "meta" for b in got)
    assert pins.copies and all(copy == (True, True) for copy in pins.copies)


def test_the_loader_without_a_gpu_loads_in_the_step_and_gives_the_same_batches(tmp_path):
    from easytrain.train.prefetch import BatchLoader

    dataset = _dataset(tmp_path)
    batches = dataset.epoch_batches(2, 4)
    for ahead in (None, 2):
        loader = BatchLoader(dataset, batches, 2, start=0, device="cpu", ahead=ahead)
        assert (loader._queue is None) == (ahead is None)
        for index, spec in enumerate(batches):
            batch, expected = loader.get(index), dataset.load_batch(spec, 2)
            assert batch.captions == expected.captions
            torch.testing.assert_close(batch.pixel_values, expected.pixel_values)
    loader = BatchLoader(dataset, batches, 2, start=0, device="cpu", ahead=1)
    loader.get(0)
    del loader                     # stops its thread (it holds no reference to the loader)
