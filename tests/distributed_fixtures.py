"""Launchers, recipes and comparisons for the distributed tests (test_distributed*.py).

Two files, so that pytest-xdist (`--dist loadfile`) can give each to another worker:
test_distributed.py compares the recipes its module fixture trains once each,
test_distributed_launch.py starts a launcher of its own in each test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from royalty.attribution.contract import run_folder
from train_fixtures import draw

BASE = ("--resolution", "16", "--timestep-draws", "2", "--quiet", "--steps", "3", "--warmup-steps", "1")
SGD = (*BASE, "--lr", "0.05")
ADAM2 = (*BASE, "--optimizer", "adamw", "--lr", "0.002", "--order", "2")
# float32 training: a different summation order moves each gradient by ~1e-7 relative,
# and the values (float64 dots of float32 factors) by as much; observed ≤ 3e-7 relative
SGD_RTOL = 1e-5
# Adam's early steps are ≈ lr·sign(g): where a gradient component is ~0 the summation
# order can flip its sign, so weights may differ by up to 2·lr per step in such
# coordinates (observed 6 % of lr) and values by ~1e-4 of their scale (observed 3e-5).
# How far depends on the CPU's kernels: on one machine one process at 1 thread and at 2
# threads differed by 1.2e-3 of the scale (order 2). So an AdamW comparison also runs one
# process at another thread count (ADAM_FLOOR_THREADS) and allows twice that distance when
# it is larger than ADAM_RTOL: two processes must agree with one as closely as one process
# agrees with itself.
ADAM_RTOL = 1e-3
ADAM_FLOOR_THREADS = 2


def _launch_env() -> dict[str, str]:
    """What each launched worker runs with: plain stderr, one thread each on the shared cores."""
    return {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}


def torchrun(*args: str | os.PathLike, nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real CLI under torchrun; --standalone picks a free port for the rendezvous."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "royalty.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_launch_env(), timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate(*args: str | os.PathLike, launch: tuple[str, ...] = ("--multi_gpu",), nproc: int = 2,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """The real CLI under `accelerate launch`, as its users start it.

    --multi_gpu is accelerate's torch.distributed launcher (it runs on CPUs where there is
    no GPU); the options it would otherwise warn about are given; a free port, not its
    fixed default, so concurrent test runs do not meet.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, "--num_processes", str(nproc),
           "--num_machines", "1", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "royalty.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_launch_env(), timeout=timeout)


def _check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


def _values(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / run_folder.VALUES).sort_values(["sample_id", "target_id"]).reset_index(drop=True)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """The trained weights: the pixel UNet, or a text-to-image run's LoRA adapters."""
    from royalty.attribution.model.text_to_image import LORA_WEIGHTS

    lora = run / run_folder.MODEL_DIR / LORA_WEIGHTS
    if lora.exists():
        from safetensors.torch import load_file

        return load_file(lora)
    from diffusers import UNet2DModel

    return UNet2DModel.from_pretrained(run / run_folder.MODEL_DIR / "unet").state_dict()


def _assert_same_run(a: Path, b: Path, rtol: float, weights_atol: float, floor: Path | None = None) -> None:
    """b is run a on other processes; `floor`: run a again at another thread count (see ADAM_RTOL)."""
    va, vb = _values(a), _values(b)
    vf = _values(floor) if floor is not None else va
    assert va[["sample_id", "owner", "target_id"]].equals(vb[["sample_id", "owner", "target_id"]])
    for column in ("value", "value_first_order", "value_second_order", "value_specific"):
        x, y, f = va[column].to_numpy(), vb[column].to_numpy(), vf[column].to_numpy()
        scale = max(float(np.abs(x).max()), 1e-12)
        allowed = max(rtol * scale, 2 * float(np.abs(x - f).max()))
        assert float(np.abs(x - y).max()) <= allowed, (column, float(np.abs(x - y).max()), scale, allowed)
    sa, sb = pd.read_parquet(a / run_folder.STEPS), pd.read_parquet(b / run_folder.STEPS)
    sf = pd.read_parquet(floor / run_folder.STEPS) if floor is not None else sa
    assert sa["step"].tolist() == sb["step"].tolist()
    for column in ("train_loss", "target_loss_before", "target_loss_after", "value_sum"):
        x, y, f = sa[column].to_numpy(), sb[column].to_numpy(), sf[column].to_numpy()
        allowed = np.maximum(rtol * np.abs(x), 2 * np.abs(x - f))
        assert (np.abs(x - y) <= allowed).all(), (column, np.abs(x - y), allowed)
    wa, wb, wf = _weights(a), _weights(b), _weights(floor) if floor is not None else None
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    allowed = weights_atol if wf is None else max(weights_atol, 2 * max(float((wa[k] - wf[k]).abs().max()) for k in wa))
    assert worst <= allowed, (worst, allowed)


def _targets_folder(root: Path, owners: tuple[str, ...]) -> Path:
    """One target per (concept, owner) pair: as many targets as wanted, in a fixed order."""
    root.mkdir(parents=True)
    lines = ["file_name,target_id,owner"]
    for i, owner in enumerate(owners):
        concept = ("bar", "cross")[i // 2 % 2]
        draw(concept, owner).save(root / f"{i}.png")
        lines.append(f"{i}.png,{concept}-{owner}-{i},{owner}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root
