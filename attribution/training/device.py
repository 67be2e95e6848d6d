"""Where a run computes: `--device cpu|cuda|cuda:N`, checked against the hardware.

Every random draw stays on the CPU (draws.py) and is moved to the device, so a seed means
the same draws everywhere; what differs between devices is only floating-point rounding,
which is why the device is part of a run's recipe. On a GPU the run asks torch for
deterministic kernels and full float32 (no TF32), so values stay reproducible and the
engine's per-sample sums stay comparable with autograd's gradient.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from royalty.attribution.training.config import check_device_name
from royalty.attribution.training.distributed import Dist
from royalty.errors import UsageError

# cuBLAS is deterministic only with a fixed workspace; it reads this once, at its start
_CUBLAS_WORKSPACE = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass(frozen=True)
class Hardware:
    """What this process can see (a parameter, so the choice is testable without a GPU)."""

    cuda_devices: int = 0
    torch_cuda: str | None = None  # the CUDA version torch was built with, None: a CPU build

    @classmethod
    def here(cls) -> "Hardware":
        return cls(torch.cuda.device_count() if torch.cuda.is_available() else 0, torch.version.cuda)


def resolve_device(name: str, dist: Dist = Dist(), hardware: Hardware | None = None) -> torch.device:
    """The torch.device `--device name` means for this process; refuses what cannot run."""
    check_device_name(name)
    if name == "cpu":
        return torch.device("cpu")
    hw = hardware if hardware is not None else Hardware.here()
    if hw.cuda_devices == 0:
        why = "this torch is a CPU build" if hw.torch_cuda is None else f"torch (CUDA {hw.torch_cuda}) sees no GPU"
        raise UsageError(f"--device {name}: {why}; use --device cpu, or install a CUDA build of torch on a GPU machine")
    if name == "cuda":
        # under a launcher each process takes the GPU of its local rank, as accelerate does
        index = dist.local_rank if dist.active else 0
    else:
        index = int(name.split(":", 1)[1])
        if dist.active:
            raise UsageError(
                f"--device {name} under a launcher would put all {dist.world} processes on one GPU: "
                "use --device cuda (each process takes the GPU of its LOCAL_RANK)"
            )
    if index >= hw.cuda_devices:
        where = f"LOCAL_RANK {index}" if name == "cuda" else name
        raise UsageError(f"--device {name}: {where} but this machine has {hw.cuda_devices} GPU(s)")
    return torch.device("cuda", index)


def use_device(device: torch.device) -> None:
    """Make `device` this process's, with the kernels a reproducible run needs."""
    if device.type != "cuda":
        return
    os.environ.setdefault(*_CUBLAS_WORKSPACE)
    # torch.cuda.set_device refuses a device without an index ("cuda"): that means the current one
    torch.cuda.set_device(device if device.index is not None else torch.cuda.current_device())
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    # TF32 rounds float32 products to 10 mantissa bits: the values would be off by ~1e-3
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def cpu_threads() -> int:
    """The CPU threads torch computes with (OMP_NUM_THREADS, else one per core)."""
    return torch.get_num_threads()


def use_cpu_threads(recorded: int | None) -> None:
    """Compute with the thread count a run recorded, so its arithmetic is the run's.

    A CPU kernel splits its sums over threads and adds the parts in another order for
    another count: 1 and 2 threads give other weights from the same recipe. Replay,
    resume and audit therefore adopt the recorded count; on a machine with fewer cores
    that is slower, never different. `None` (recorded before runs kept it): as it is.
    """
    if recorded is not None and recorded != torch.get_num_threads():
        torch.set_num_threads(int(recorded))


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a model computes: its data is moved there."""
    return next(module.parameters()).device
