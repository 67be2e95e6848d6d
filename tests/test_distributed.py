"""`royalty train` under torchrun (2 CPU processes, gloo), gradient accumulation and bf16.

The claim: a data-parallel run, or an accumulated one, is the one-process run with the
same global batch and seed — same batches, draws, targets and value formula — except
for the order in which floats are summed (the gradient all-reduce, the micro-batches).
Those rounding differences are why the comparisons below have tolerances, stated with
each; a plain one-process run stays bit-identical to what it was (test_train_cli).

Here: the recipes trained once each by the module fixture, compared; launches of their
own in test_distributed_launch.py.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from distributed_fixtures import (
    ADAM2, ADAM_FLOOR_THREADS, ADAM_RTOL, SGD, SGD_RTOL, _assert_same_run, _check, _values, accelerate, torchrun,
)
from royalty.attribution.contract import run_folder
from train_fixtures import make_folders, royalty


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    return make_folders(tmp_path_factory.mktemp("dist-data"))


@pytest.fixture(scope="module")
def runs(folders, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Each recipe once: (run folder, stdout)."""
    data, targets = folders
    base = tmp_path_factory.mktemp("dist-runs")
    recipes = {
        "one": (royalty, ("--batch-size", "4", "--checkpoint-every", "2", *SGD)),
        "two": (torchrun, ("--batch-size", "4", "--checkpoint-every", "2", *SGD)),
        "two-bf16": (torchrun, ("--batch-size", "4", "--mixed-precision", "bf16", *SGD)),
        "accelerate-bf16": (partial(accelerate, launch=("--multi_gpu", "--mixed_precision", "bf16")), ("--batch-size", "4", *SGD)),
        "accumulated": (royalty, ("--batch-size", "2", "--gradient-accumulation-steps", "2", *SGD)),
        "two-accumulated": (torchrun, ("--batch-size", "2", "--gradient-accumulation-steps", "2", *SGD)),
        "one-adam2": (royalty, ("--batch-size", "4", *ADAM2)),
        "two-adam2": (torchrun, ("--batch-size", "4", *ADAM2)),
        "one-adam2-floor": (partial(royalty, threads=ADAM_FLOOR_THREADS), ("--batch-size", "4", *ADAM2)),
        "one-secant": (royalty, ("--batch-size", "4", *SGD, "--order", "2", "--curvature", "secant")),
        "two-secant": (torchrun, ("--batch-size", "4", *SGD, "--order", "2", "--curvature", "secant")),
    }
    out = {}
    for name, (launch, args) in recipes.items():
        proc = _check(launch("train", data, "--targets", targets, "--out", base / name, *args))
        out[name] = (base / name, proc.stdout)
    return out


def test_two_processes_equal_one_with_the_global_batch(runs) -> None:
    (one, _), (two, stdout) = runs["one"], runs["two"]
    # float32 weights after 4 SGD steps at lr 0.05: observed ≤ 1.2e-7 apart
    _assert_same_run(one, two, SGD_RTOL, weights_atol=1e-5)
    manifest = json.loads((two / run_folder.MANIFEST).read_text())
    assert manifest["world_size"] == 2
    assert json.loads((one / run_folder.MANIFEST).read_text())["world_size"] == 1
    summary = json.loads(stdout)  # rank 0 alone prints the summary: one JSON document
    assert summary["world_size"] == 2 and summary["steps"] == 3
    # rank 0 alone wrote checkpoints, each recorded in the manifest
    assert sorted(manifest["checkpoints"]) == ["step-00000000.pt", "step-00000002.pt"]
    assert manifest["outputs"] == run_folder.output_hashes(two)


def test_accelerate_launch_is_the_torchrun_run_and_honours_its_mixed_precision(runs) -> None:
    """`accelerate launch --mixed_precision bf16` trains in bf16 as --mixed-precision bf16 does.

    The same recipe on the same 2 processes gives the same bits whichever launcher started
    them: accelerate's ranks, world and precision are torchrun's, and torchrun's run is
    the one-process run (test_two_processes_equal_one_with_the_global_batch)."""
    (acc, stdout), (two, _) = runs["accelerate-bf16"], runs["two-bf16"]
    assert json.loads(stdout)["world_size"] == 2
    manifest = json.loads((acc / run_folder.MANIFEST).read_text())
    assert manifest["world_size"] == 2 and manifest["config"]["mixed_precision"] == "bf16"
    assert _values(acc).equals(_values(two))


def test_gradient_accumulation_is_the_union_of_micro_batches(runs) -> None:
    """2 micro-batches of 2 rows = one batch of 4, on one process and on two."""
    one = runs["one"][0]
    _assert_same_run(one, runs["accumulated"][0], SGD_RTOL, weights_atol=1e-5)
    _assert_same_run(one, runs["two-accumulated"][0], SGD_RTOL, weights_atol=1e-5)
    config = json.loads((runs["accumulated"][0] / run_folder.MANIFEST).read_text())["config"]
    assert config["gradient_accumulation_steps"] == 2 and config["batch_size"] == 2


def test_adamw_second_order_on_two_processes(runs) -> None:
    """AdamW's P needs the all-reduced gradient, order 2's HVP the global batch gradient."""
    one, two = runs["one-adam2"][0], runs["two-adam2"][0]
    assert _values(one)["value_second_order"].abs().max() > 0
    _assert_same_run(one, two, ADAM_RTOL, weights_atol=0.002, floor=runs["one-adam2-floor"][0])  # = lr: see ADAM_RTOL


def test_the_secant_curvature_on_two_processes(runs) -> None:
    """Each process takes its share of the targets again after the step; gathered, they are
    the one-process run's (SGD: the tolerances of plain SGD's test)."""
    one, two = runs["one-secant"][0], runs["two-secant"][0]
    assert _values(one)["value_second_order"].abs().max() > 0
    _assert_same_run(one, two, SGD_RTOL, weights_atol=1e-5)


def test_resume_on_another_number_of_processes_is_refused(runs, tmp_path) -> None:
    import shutil

    two = shutil.copytree(runs["two"][0], tmp_path / "two")
    config = json.loads((two / run_folder.MANIFEST).read_text())["config"]
    proc = royalty("train", config["data"], "--targets", config["targets"], "--out", two, "--resume",
                   "--batch-size", "4", "--checkpoint-every", "2", *SGD)
    assert proc.returncode == 2, proc.stderr
    assert "checkpointed on 2 process(es)" in proc.stderr


def test_bf16_mixed_precision_values_are_close_to_float32(folders, runs, tmp_path) -> None:
    """bf16 autocast of the training forward; per-sample gradients and dots in float32/64.

    The update is bf16 training's own; the values are exact for the bf16 activations and
    output gradients the step used, so they differ from a float32 run by bf16's rounding:
    observed 0.2 % (relative L2) after 4 steps. The bound here is 2 %.
    """
    data, targets = folders
    out = tmp_path / "bf16"
    _check(royalty("train", data, "--targets", targets, "--out", out, "--batch-size", "4", "--mixed-precision", "bf16", *SGD))
    a = _values(runs["one"][0])["value"].to_numpy()
    for bf16 in (out, runs["two-bf16"][0]):  # one process, and two
        b = _values(bf16)["value"].to_numpy()
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.02
        assert json.loads((bf16 / run_folder.MANIFEST).read_text())["config"]["mixed_precision"] == "bf16"


def test_bad_accumulation_and_precision_options(folders, tmp_path) -> None:
    data, targets = folders
    for args, message in (
        (("--gradient-accumulation-steps", "0"), "--gradient-accumulation-steps must be at least 1"),
        (("--mixed-precision", "fp8"), "--mixed-precision must be one of no, bf16"),
    ):
        proc = royalty("train", data, "--targets", targets, "--out", tmp_path / "bad", *args, *SGD)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
