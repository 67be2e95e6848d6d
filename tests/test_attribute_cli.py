"""`royalty generate` and `royalty attribute`, through the real CLI.

The claims: replay gives the values `royalty train --targets` would have given for the
same images; it refuses a run whose recorded trajectory it cannot reproduce; the
checkpoints mode with a checkpoint at every step is the in-run first order exactly;
payout can pay from an attribution.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from train_fixtures import TINY, draw, make_data, make_targets, royalty

RECIPES = {
    "sgd-first": ("--warmup-steps", "2", "--steps", "5", "--checkpoint-every", "1"),
    "adamw-second": ("--warmup-steps", "2", "--steps", "3", "--optimizer", "adamw", "--lr", "0.002", "--order", "2", "--checkpoint-every", "1"),
    # each step is two micro-batches: replay and checkpoints must value the union
    "sgd-accumulated": ("--warmup-steps", "1", "--steps", "3", "--gradient-accumulation-steps", "2", "--checkpoint-every", "1"),
}


def _other_targets(root: Path) -> Path:
    """Targets the run never saw: other concepts and one unlisted in any metadata."""
    root.mkdir(parents=True)
    draw("circle", "bob").save(root / "new-circle.png")
    draw("cross", "ann").save(root / "new-cross.png")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("attr")
    data, targets, other = make_data(base / "data"), make_targets(base / "targets"), _other_targets(base / "other")
    runs = {}
    for name, recipe in RECIPES.items():
        run = base / f"run-{name}"
        royalty("train", data, "--targets", targets, "--out", run, *TINY, *recipe, check=True)
        # the same recipe trained with the other images as its targets: what replay must match
        direct = base / f"direct-{name}"
        royalty("train", data, "--targets", other, "--out", direct, *TINY, *recipe, check=True)
        runs[name] = (run, direct)
    return base, data, targets, other, runs


def _values(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(["sample_id", "target_id"]).reset_index(drop=True)


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


@pytest.fixture(scope="module")
def replayed(world):
    """Each recipe's run, copied, with the other images attributed by replay."""
    base, _, _, other, runs = world
    out = {}
    for recipe, (run, _) in runs.items():
        work = _copy(run, base / f"replay-{recipe}")
        out[recipe] = (work, json.loads(royalty("attribute", work, other, "--quiet", check=True).stdout))
    return out


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_replay_equals_training_with_those_targets(world, replayed, recipe):
    run, direct = world[4][recipe]
    work, summary = replayed[recipe]
    assert summary["mode"] == "replay" and summary["targets"] == 2 and summary["name"] == "other"
    got = _values(work / "attributions" / "other" / "values.parquet")
    want = _values(direct / "values.parquet")
    assert list(got.columns) == list(pd.read_parquet(run / "values.parquet").columns)
    assert got[["sample_id", "owner", "target_id"]].equals(want[["sample_id", "owner", "target_id"]])
    for column in ("value", "value_first_order", "value_second_order"):
        np.testing.assert_allclose(got[column], want[column], rtol=1e-6, atol=1e-12)
    if recipe == "adamw-second":
        assert (got["value_second_order"] != 0).any()
    # R is the run's own reference (its targets' mean), not the new images' mean
    run_values = pd.read_parquet(run / "values.parquet")
    r = (run_values["value"] - run_values["value_specific"]).groupby(run_values["sample_id"]).mean()
    np.testing.assert_allclose(got["value"] - got["value_specific"], r.loc[got["sample_id"]].to_numpy(), rtol=1e-9, atol=1e-12)
    doc = json.loads((work / "attributions" / "other" / "attribution.json").read_text())
    assert doc["replayed_weights_sha256"] == json.loads((run / "run.json").read_text())["weights_sha256"]
    steps = pd.read_parquet(work / "attributions" / "other" / "steps.parquet")
    np.testing.assert_allclose(steps["value_sum"], pd.read_parquet(direct / "steps.parquet")["value_sum"], rtol=1e-6)


def test_replay_of_the_runs_own_targets_is_bit_identical(world):
    base, _, targets, _, runs = world
    work = _copy(runs["sgd-first"][0], base / "replay-own")
    royalty("attribute", work, targets, "--name", "own", "--quiet", check=True)
    assert _values(work / "attributions" / "own" / "values.parquet").equals(_values(work / "values.parquet"))


def test_replay_computes_with_the_runs_cpu_threads(world, tmp_path):
    """Two threads add a kernel's partial sums in another order than one: the trained
    weights differ in their last bits, and a replay that walked another trajectory is
    refused (its weights hash differs). A replay on one thread adopts the run's two, so
    replaying the run's own targets gives its values bit for bit."""
    _, data, targets, _, _ = world
    run = tmp_path / "run"
    royalty("train", data, "--targets", targets, "--out", run, *TINY, *RECIPES["sgd-first"], threads=2, fresh=True, check=True)
    assert json.loads((run / "run.json").read_text())["cpu_threads"] == 2
    one = tmp_path / "one"
    royalty("train", data, "--targets", targets, "--out", one, *TINY, *RECIPES["sgd-first"], threads=1, check=True)
    assert (one / "values.parquet").read_bytes() != (run / "values.parquet").read_bytes()  # the count matters
    royalty("attribute", run, targets, "--name", "own", "--quiet", threads=1, fresh=True, check=True)
    assert _values(run / "attributions" / "own" / "values.parquet").equals(_values(run / "values.parquet"))


def test_replay_of_a_run_without_recorded_threads_says_what_to_check(world, tmp_path):
    _, _, _, other, runs = world
    work = _copy(runs["sgd-first"][0], tmp_path / "old")
    manifest = json.loads((work / "run.json").read_text())
    del manifest["cpu_threads"]  # as runs recorded before the count was kept
    manifest["config"]["lr"] = 0.04  # and a trajectory the replay cannot reproduce
    (work / "run.json").write_text(json.dumps(manifest))
    proc = royalty("attribute", work, other)
    assert proc.returncode == 65 and "OMP_NUM_THREADS" in proc.stderr, proc.stderr


@pytest.mark.parametrize("tamper", ["config", "model", "training-image"])
def test_replay_refuses_a_tampered_run(world, tamper):
    base, data, _, other, runs = world
    work = _copy(runs["sgd-first"][0], base / f"tampered-{tamper}")
    manifest = json.loads((work / "run.json").read_text())
    if tamper == "config":  # another learning rate: the replay walks another trajectory
        manifest["config"]["lr"] = 0.04
    elif tamper == "model":
        weights = next((work / "model" / "unet").glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    else:
        copy = shutil.copytree(data, base / f"data-{tamper}")
        draw("square", "bob").save(copy / "ann_circle.png")
        manifest["input_folders"]["train"] = str(copy)
    (work / "run.json").write_text(json.dumps(manifest))
    proc = royalty("attribute", work, other)
    assert proc.returncode == 65, proc.stderr
    expected = {"config": "did not reproduce its final weights", "model": "model does not match", "training-image": "ann_circle.png"}
    assert expected[tamper] in proc.stderr
    assert not (work / "attributions" / "other").exists()


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_checkpoints_at_every_step_give_the_in_run_first_order(world, recipe):
    """Own-step credit: with a checkpoint at every step each window is one step at its own
    weights. (AdamW's applied credit also values a batch at later steps' weights, which no
    checkpoint window sees: its checkpoints mode is an approximation, the own-step value
    scaled by the batch's applied weight.)"""
    base, data, targets, _, runs = world
    if recipe.startswith("adamw"):
        work = base / f"ck-{recipe}"
        royalty("train", data, "--targets", targets, "--out", work, *TINY, *RECIPES[recipe], "--credit", "own-step", check=True)
    else:
        work = _copy(runs[recipe][0], base / f"ck-{recipe}")
    royalty("attribute", work, targets, "--mode", "checkpoints", "--name", "ck", "--quiet", check=True)
    got = _values(work / "attributions" / "ck" / "values.parquet")
    want = _values(work / "values.parquet")
    # a checkpoint at every step: each window is one step at its own weights
    np.testing.assert_allclose(got["value_first_order"], want["value_first_order"], rtol=1e-5, atol=1e-9)
    assert (got["value_second_order"] == 0).all()
    np.testing.assert_allclose(got["value"], got["value_first_order"])
    doc = json.loads((work / "attributions" / "ck" / "attribution.json").read_text())
    assert doc["mode"] == "checkpoints" and doc["order"] == 1 and doc["checkpoint_steps"][0] == 0


def test_checkpoints_with_wider_windows_approximate(world):
    base, data, targets, _, _ = world
    run = base / "run-k2"
    royalty("train", data, "--targets", targets, "--out", run, *TINY, "--steps", "6", "--checkpoint-every", "3", check=True)
    royalty("attribute", run, targets, "--mode", "checkpoints", "--name", "k3", "--quiet", check=True)
    got = _values(run / "attributions" / "k3" / "values.parquet")["value"].to_numpy()
    want = _values(run / "values.parquet")["value"].to_numpy()
    assert np.isfinite(got).all() and not np.allclose(got, want, rtol=1e-6)  # steps 1, 2, 4, 5 use older weights
    assert np.corrcoef(got, want)[0, 1] > 0.5


def test_checkpoints_mode_needs_checkpoints_and_checks_them(world, tmp_path):
    base, data, targets, _, runs = world
    bare = tmp_path / "bare"
    royalty("train", data, "--targets", targets, "--out", bare, *TINY, "--steps", "2", check=True)
    proc = royalty("attribute", bare, targets, "--mode", "checkpoints")
    assert proc.returncode == 2 and "--checkpoint-every" in proc.stderr
    work = _copy(runs["sgd-first"][0], tmp_path / "ck-tampered")
    ck = work / "checkpoints" / "step-00000002.pt"
    ck.write_bytes(ck.read_bytes() + b"x")
    proc = royalty("attribute", work, targets, "--mode", "checkpoints")
    assert proc.returncode == 65 and "step-00000002.pt" in proc.stderr


def test_attribute_bad_input(world, tmp_path):
    base, _, targets, other, runs = world
    work = _copy(runs["sgd-first"][0], tmp_path / "run")
    assert royalty("attribute", work, tmp_path / "missing").returncode == 66
    assert royalty("attribute", tmp_path / "no-run", other).returncode == 66
    assert royalty("attribute", work, other, "--name", "../escape").returncode == 2
    assert royalty("attribute", work, other, "--mode", "guess").returncode == 2
    stale = work / "attributions" / "other"
    stale.mkdir(parents=True)
    (stale / "leftover.txt").write_text("from an earlier attribution")
    again = royalty("attribute", work, other, "--mode", "checkpoints")
    assert again.returncode == 73 and "--force" in again.stderr
    royalty("attribute", work, other, "--mode", "checkpoints", "--force", "--quiet", check=True)
    assert sorted(p.name for p in (work / "attributions").iterdir()) == ["other"]
    assert sorted(p.name for p in stale.iterdir()) == ["attribution.json", "values.parquet"]


def test_payout_from_an_attribution(replayed, tmp_path):
    work = _copy(replayed["sgd-first"][0], tmp_path / "run")
    doc = json.loads(royalty("payout", work, "--revenue", "10.00", "--attribution", "other", check=True).stdout)
    assert doc["provenance"]["attribution"] == "other"
    assert sum(p["amount"]["minor"] for p in doc["payees"]) == 1000
    ledger = tmp_path / "sales.csv"
    ledger.write_text("sale_id,target_id,amount\ns1,new-circle,3.00\ns2,new-cross,4.00\n")
    sales = json.loads(royalty("payout", work, "--sales", ledger, "--attribution", "other", check=True).stdout)
    assert sum(p["amount"]["minor"] for p in sales["payees"]) == 700
    # the run's own targets are not in the attribution
    ledger.write_text("sale_id,target_id,amount\ns1,bar-ann,3.00\n")
    assert royalty("payout", work, "--sales", ledger, "--attribution", "other").returncode == 65
    values = work / "attributions" / "other" / "values.parquet"
    values.write_bytes(values.read_bytes() + b"\0")
    proc = royalty("payout", work, "--revenue", "10.00", "--attribution", "other")
    assert proc.returncode == 65 and "modified" in proc.stderr


def test_generate_then_attribute(world, tmp_path):
    base, _, _, _, runs = world
    run = _copy(runs["sgd-first"][0], tmp_path / "run")
    out = tmp_path / "gen"
    summary = json.loads(royalty("generate", run, "--num", "3", "--out", out, "--seed", "7", "--steps", "5", "--batch-size", "2", "--quiet", check=True).stdout)
    assert summary["images"] == 3 and summary["seeds"] == [7, 9]
    meta = pd.read_csv(out / "metadata.csv")
    assert list(meta.columns) == ["file_name", "target_id", "seed", "scheduler", "steps", "run_id"]
    assert list(meta["seed"]) == [7, 8, 9] and set(meta["scheduler"]) == {"ddim"}
    for name in meta["file_name"]:
        with Image.open(out / name) as img:
            assert img.size == (16, 16) and img.mode == "RGB"
    again = tmp_path / "gen-again"
    royalty("generate", run, "--num", "3", "--out", again, "--seed", "7", "--steps", "5", "--batch-size", "2", "--quiet", check=True)
    assert all((out / n).read_bytes() == (again / n).read_bytes() for n in meta["file_name"])
    assert royalty("generate", run, "--num", "1", "--out", out).returncode == 73
    assert royalty("generate", run, "--num", "0", "--out", tmp_path / "zero").returncode == 2
    ddpm = json.loads(royalty("generate", run, "--num", "1", "--out", tmp_path / "ddpm", "--scheduler", "ddpm", "--steps", "4", "--quiet", check=True).stdout)
    assert ddpm["scheduler"] == "ddpm"
    royalty("attribute", run, out, "--mode", "checkpoints", "--quiet", check=True)
    got = pd.read_parquet(run / "attributions" / "gen" / "values.parquet")
    assert sorted(got["target_id"].unique()) == list(meta["target_id"])
