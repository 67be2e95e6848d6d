"""`royalty train` as a user runs it: the real CLI, each command line a process of its own
(train_fixtures.royalty), on tiny real images."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from royalty.atomic import sha256_file
from royalty.attribution.contract import run_folder
from train_fixtures import TINY, make_folders, make_targets, royalty


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    return make_folders(root)


@pytest.fixture(scope="module")
def run(folders, tmp_path_factory) -> tuple[Path, dict]:
    data, targets = folders
    out = tmp_path_factory.mktemp("runs") / "run"
    proc = royalty("train", data, "--targets", targets, "--out", out, "--steps", "4", *TINY, check=True)
    return out, json.loads(proc.stdout)


def test_run_folder_contract(run, folders) -> None:
    out, summary = run
    assert summary["steps"] == 4 and summary["train_images"] == 6 and summary["targets"] == 2
    values = pd.read_parquet(out / run_folder.VALUES)
    assert list(values.columns) == [*run_folder.VALUE_COLUMNS, run_folder.SPECIFIC_COLUMN]
    assert len(values) == 6 * 2
    assert values["value"].abs().sum() > 0
    assert (values["value_second_order"] == 0).all()
    torch.testing.assert_close(
        torch.tensor(values["value"].to_numpy()), torch.tensor(values["value_first_order"].to_numpy()), rtol=0, atol=0
    )
    # targets-mean reference: value_specific sums to zero over targets, per sample
    per_sample = values.groupby("sample_id")["value_specific"].sum()
    assert per_sample.abs().max() < 1e-12
    steps = pd.read_parquet(out / run_folder.STEPS)
    assert list(steps.columns) == list(run_folder.STEP_COLUMNS)
    assert steps["step"].tolist() == [0, 1, 2, 3]
    assert steps[["target_loss_before", "target_loss_after", "value_sum"]].notna().all().all()

    manifest = json.loads((out / run_folder.MANIFEST).read_text())
    assert manifest["format_version"] == run_folder.FORMAT_VERSION
    assert manifest["outputs"][run_folder.VALUES] == sha256_file(out / run_folder.VALUES)
    assert manifest["outputs"] == run_folder.output_hashes(out)
    data, _ = folders
    hashes = {row["file_name"]: row["sha256"] for row in manifest["inputs"]["train"]}
    assert hashes["ann_circle.png"] == sha256_file(data / "ann_circle.png")
    assert manifest["config"]["seed"] == 0 and manifest["seed"] == 0

    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(out / run_folder.MODEL_DIR)
    assert pipe.unet.config.sample_size == 16


def test_value_sum_tracks_target_loss_change(run) -> None:
    """value_sum is the first-order prediction of target_loss_before − target_loss_after."""
    out, _ = run
    steps = pd.read_parquet(out / run_folder.STEPS)
    change = steps["target_loss_before"] - steps["target_loss_after"]
    assert (change.abs() > 0).all()
    # every step of this run lowers the targets' loss, and the values say so at every step
    # (how closely they add up is test_efficiency's subject; at lr 0.05 they over-predict)
    assert (change > 0).all() and (steps["value_sum"] > 0).all()
    # value_sum is what the step credited: over the run, the values table's mean over targets
    values = pd.read_parquet(out / run_folder.VALUES)
    per_target = values.groupby("target_id")["value"].sum()
    assert steps["value_sum"].sum() == pytest.approx(per_target.mean(), rel=1e-9)


def test_same_seed_gives_byte_identical_values(run, folders, tmp_path) -> None:
    out, _ = run
    data, targets = folders
    royalty("train", data, "--targets", targets, "--out", tmp_path / "again", "--steps", "4", *TINY, check=True)
    assert (tmp_path / "again" / run_folder.VALUES).read_bytes() == (out / run_folder.VALUES).read_bytes()
    other = tmp_path / "seed1"
    royalty("train", data, "--targets", targets, "--out", other, "--steps", "4", "--seed", "1", *TINY, check=True)
    assert (other / run_folder.VALUES).read_bytes() != (out / run_folder.VALUES).read_bytes()


def test_values_do_not_change_training(run, folders, tmp_path) -> None:
    """The engine leaves the optimizer's gradients bit-identical to plain training."""
    out, _ = run
    data, targets = folders
    plain = tmp_path / "plain"
    royalty("train", data, "--targets", targets, "--out", plain, "--steps", "4", "--no-values", *TINY, check=True)
    from diffusers import UNet2DModel

    a = UNet2DModel.from_pretrained(out / "model" / "unet").state_dict()
    b = UNet2DModel.from_pretrained(plain / "model" / "unet").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (plain / run_folder.VALUES).exists()


def test_resume_after_sigkill_matches_uninterrupted(folders, tmp_path) -> None:
    data, targets = folders
    args = ("--steps", "12", "--checkpoint-every", "2", "--warmup-steps", "2", *TINY)
    whole = tmp_path / "whole"
    royalty("train", data, "--targets", targets, "--out", whole, *args, check=True)

    cut = tmp_path / "cut"
    cmd = [sys.executable, "-m", "royalty.cli", "train", str(data), "--targets", str(targets), "--out", str(cut), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((cut / "checkpoints").glob("step-*.pt"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / run_folder.MANIFEST).exists(), "the run finished before it could be killed"
    assert not (cut / run_folder.VALUES).exists()

    again = royalty("train", data, "--targets", targets, "--out", cut, *args)
    assert again.returncode == 73 and "--resume" in again.stderr  # refuses to clobber without --resume
    royalty("train", data, "--targets", targets, "--out", cut, *args, "--resume", check=True)
    assert (cut / run_folder.VALUES).read_bytes() == (whole / run_folder.VALUES).read_bytes()
    assert pd.read_parquet(cut / run_folder.STEPS).equals(pd.read_parquet(whole / run_folder.STEPS))
    assert not [p for p in cut.rglob("*.tmp")], "temporary files left behind"


def test_resume_computes_with_the_interrupted_runs_cpu_threads(folders, tmp_path) -> None:
    """A run started on two threads and resumed on one ends as the two-thread run does."""
    data, targets = folders
    args = ("--steps", "6", "--checkpoint-every", "2", "--warmup-steps", "1", *TINY)
    whole = tmp_path / "whole"
    royalty("train", data, "--targets", targets, "--out", whole, *args, threads=2, fresh=True, check=True)
    one = tmp_path / "one"
    royalty("train", data, "--targets", targets, "--out", one, *args, threads=1, check=True)
    assert (one / run_folder.VALUES).read_bytes() != (whole / run_folder.VALUES).read_bytes()  # the count matters

    # the state a kill after step 2's checkpoint leaves: checkpoints up to it, no outputs
    # (the two-thread run's own: its out path is no part of the recipe --resume checks)
    cut = shutil.copytree(whole, tmp_path / "cut")
    for done in ("model", run_folder.VALUES, run_folder.STEPS, run_folder.MANIFEST, "checkpoints/step-00000004.pt"):
        path = cut / done
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    royalty("train", data, "--targets", targets, "--out", cut, *args, "--resume", threads=1, fresh=True, check=True)
    assert (cut / run_folder.VALUES).read_bytes() == (whole / run_folder.VALUES).read_bytes()
    assert json.loads((cut / run_folder.MANIFEST).read_text())["cpu_threads"] == 2


@pytest.mark.parametrize("extra", [("--optimizer", "adamw", "--lr", "0.001"), ("--order", "2"), ("--estimator", "fresh"), ("--estimator", "subset", "--target-subset", "1"), ("--estimator", "rotation", "--target-subset", "1")])
def test_other_modes_run(folders, tmp_path, extra) -> None:
    data, targets = folders
    out = tmp_path / "run"
    royalty("train", data, "--targets", targets, "--out", out, "--steps", "2", *TINY, *extra, check=True)
    values = pd.read_parquet(out / run_folder.VALUES)
    assert values["value"].notna().all() and values["value"].abs().sum() > 0
    if "--order" in extra:
        assert values["value_second_order"].abs().sum() > 0
        torch.testing.assert_close(
            torch.tensor(values["value"].to_numpy()),
            torch.tensor((values["value_first_order"] + values["value_second_order"]).to_numpy()),
        )


def test_reference_folder_gives_specific_values(folders, tmp_path) -> None:
    data, targets = folders
    ref = make_targets(tmp_path / "ref", concept="circle")
    out = tmp_path / "run"
    royalty("train", data, "--targets", targets, "--out", out, "--steps", "2", "--reference", ref, *TINY, check=True)
    values = pd.read_parquet(out / run_folder.VALUES)
    manifest = json.loads((out / run_folder.MANIFEST).read_text())
    assert manifest["reference"] == "folder" and len(manifest["inputs"]["reference"]) == 2
    assert (values["value"] - values["value_specific"]).abs().sum() > 0


def test_fine_tunes_a_local_model_folder(run, folders, tmp_path) -> None:
    """--model takes the run's own pipeline folder (or any local DDPMPipeline/UNet2DModel)."""
    out, _ = run
    data, targets = folders
    again = tmp_path / "finetune"
    royalty("train", data, "--targets", targets, "--out", again, "--steps", "1", "--model", out / "model", *TINY, check=True)
    manifest = json.loads((again / run_folder.MANIFEST).read_text())
    assert manifest["model_source"]["kind"] == "folder"


def test_fine_tunes_diffusers_default_unet2dmodel(folders, tmp_path) -> None:
    """Issue 21: diffusers' defaults (norm_num_groups=32: biases whose gradient is exactly
    zero) were refused by the engine's self-check; a DDPMPipeline folder of them trains."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    data, targets = folders
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    assert unet.config.norm_num_groups == 32
    model = tmp_path / "model"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(model)
    out = tmp_path / "run"
    royalty("train", data, "--targets", targets, "--out", out, "--steps", "2", "--model", model, *TINY, check=True)
    values = pd.read_parquet(out / run_folder.VALUES)
    assert len(values) == 6 * 2 and values["value"].notna().all() and values["value"].abs().sum() > 0


def test_payout_of_a_trained_run(run) -> None:
    """The two commands together, as the README runs them."""
    out, _ = run
    proc = royalty("payout", out, "--revenue", "1000.00", "--on-no-positive", "equal", check=True)
    doc = json.loads(proc.stdout)
    assert doc["revenue"]["minor"] == 100000
    assert sum(p["amount"]["minor"] for p in doc["payees"]) + doc["totals"]["carried_forward"]["minor"] == 100000
    assert {p["owner"] for p in doc["payees"]} == {"ann", "bob"}


def test_progress_lines_when_stderr_is_a_pipe(folders, tmp_path) -> None:
    """Issue 21: under nohup or a cluster job stderr is a file, where a bar shows nothing until the end."""
    data, targets = folders
    loud = [arg for arg in TINY if arg != "--quiet"]
    args = ("--steps", "3", "--warmup-steps", "1", *loud)
    proc = royalty("train", data, "--targets", targets, "--out", tmp_path / "run", *args, check=True)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train: ")]
    # 4 steps: every one is another 5 %
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"], proc.stderr
    assert re.fullmatch(r"train: 2/4 \(50%\), loss \d+\.\d{4}, elapsed \d:\d\d:\d\d, ETA \d:\d\d:\d\d", lines[1]), lines[1]
    assert lines[-1].endswith(", done") and "━" not in proc.stderr  # no bar drawn into the pipe
    quiet = royalty("train", data, "--targets", targets, "--out", tmp_path / "run", *args, "--force", "--quiet", check=True)
    assert quiet.stderr == ""
