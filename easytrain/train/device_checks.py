"""What torch can use on this machine, said before training: a CUDA wheel that cannot drive the GPU, TF32.

A machine with an NVIDIA GPU (nvidia-smi lists it) whose installed torch sees
none (a CPU wheel, or a CUDA wheel newer than the driver supports) would
otherwise train on the CPU without a word, hours instead of minutes. The
message names the fix: the driver version the wheel needs, or the wheel that
matches the driver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

# The minimum Linux driver for each CUDA toolkit (NVIDIA's CUDA release notes, table 3); Windows drivers
# number differently, so the message names the CUDA version the driver must support as well.
MIN_DRIVER = (
    ((13, 0), "580.65.06"),
    ((12, 9), "575.51.03"),
    ((12, 8), "570.26"),
    ((12, 6), "560.28.03"),
    ((12, 4), "550.54.14"),
    ((12, 1), "530.30.02"),
    ((11, 8), "520.61.05"),
)
# PyTorch's CUDA wheel indexes, newest first: the first one the driver supports is the one to install.
WHEEL_CUDA = ((13, 0), (12, 8), (12, 6), (12, 4), (12, 1), (11, 8))
WHEEL_INDEX = "https://download.pytorch.org/whl/cu{}{}"


@dataclass(frozen=True)
class DriverInfo:
    gpu: str                       # the first GPU's name
    driver: str                    # "535.104.05"
    cuda: Optional[tuple[int, int]]  # the newest CUDA the driver supports ("CUDA Version" in nvidia-smi)


def parse_version(text: Optional[str]) -> Optional[tuple[int, int]]:
    match = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def driver_info() -> Optional[DriverInfo]:
    """The first GPU's name, driver and supported CUDA version from nvidia-smi; None without one."""
    from easytrain import machine

    if not machine.has_cuda_gpu():
        return None
    query = machine._nvidia_smi("--query-gpu=name,driver_version", "--format=csv,noheader") or ""
    header = machine._nvidia_smi() or ""
    try:
        name, driver = (part.strip() for part in query.strip().splitlines()[0].rsplit(",", 1))
    except (ValueError, IndexError):
        name, driver = "an NVIDIA GPU", "unknown"
    found = re.search(r"CUDA Version:\s*([\d.]+)", header)
    return DriverInfo(name, driver, parse_version(found.group(1)) if found else None)


def min_driver(cuda: tuple[int, int]) -> Optional[str]:
    for version, driver in MIN_DRIVER:
        if cuda >= version:
            return driver
    return None


def cuda_mismatch_message(driver: Optional[DriverInfo], *, cuda_available: bool, torch_version: str,
                          torch_cuda: Optional[str]) -> Optional[str]:
    """Why torch sees no GPU where nvidia-smi sees one, and the fix; None when there is nothing to say."""
    if driver is None or cuda_available:
        return None
    seen = f"nvidia-smi shows {driver.gpu} (driver {driver.driver}"
    seen += f", CUDA up to {driver.cuda[0]}.{driver.cuda[1]})" if driver.cuda else ")"
    wheel = next((v for v in WHEEL_CUDA if driver.cuda is None or v <= driver.cuda), None)
    install = (f"pip install --force-reinstall torch --index-url {WHEEL_INDEX.format(*wheel)}" if wheel
               else "a PyTorch CUDA wheel")
    if not torch_cuda:
        return (f"{seen} but this PyTorch ({torch_version}) is the CPU-only build, so training would run on the "
                f"CPU. Fix: install the CUDA build into easytrain's venv: {install}")
    wanted = parse_version(torch_cuda)
    if wanted and driver.cuda and wanted > driver.cuda:
        need = min_driver(wanted)
        return (f"{seen} but this PyTorch ({torch_version}) is built for CUDA {torch_cuda}, newer than the driver "
                f"supports, so it sees no GPU and training would run on the CPU. Fix: update the NVIDIA driver to "
                f"{need or 'one supporting CUDA ' + torch_cuda} or newer, or install the wheel that matches this "
                f"driver: {install}")
    return (f"{seen} but PyTorch {torch_version} (CUDA {torch_cuda}) cannot use it, so training would run on the "
            "CPU. Check that CUDA_VISIBLE_DEVICES does not hide it, that no other process holds it in exclusive "
            f"mode, and that `python -c \"import torch; torch.cuda.init()\"` works; reinstalling torch with {install} "
            "or rebooting after a driver update usually fixes it")


def cuda_mismatch() -> Optional[str]:
    """This machine's message (torch imported here), or None when torch uses the GPU or there is none."""
    import torch

    driver = driver_info()
    if driver is None:
        return None
    return cuda_mismatch_message(driver, cuda_available=torch.cuda.is_available(), torch_version=torch.__version__,
                                 torch_cuda=torch.version.cuda)


def enable_tf32(device) -> bool:
    """TF32 matmuls and convolutions on GPUs that have them (Ampere or newer); True when enabled.

    The fp32 parts of a mixed-precision step (the LoRA weights, the loss, the VAE when it encodes in fp32) then
    run on the tensor cores, as bench/gpu_step.py measures them; PyTorch leaves matmul TF32 off by default.
    """
    import torch

    if getattr(device, "type", None) != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return False
    torch.set_float32_matmul_precision("high")      # TF32 matmuls (PyTorch's default is "highest": none)
    torch.backends.cudnn.allow_tf32 = True
    return True


def main() -> int:
    """`python -m easytrain.train.device_checks`: wizard.py runs it after installing, on NVIDIA machines."""
    message = cuda_mismatch()
    if message:
        print(message)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
