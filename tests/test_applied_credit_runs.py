"""`royalty train --credit applied` end to end: the ledger, resume, accumulation, old runs.

The arithmetic is tested against closed forms (test_adam_credit.py) and the float64
reference (test_applied_credit_exact.py); here the run folder and the ways a run can be
cut into pieces, which must all give the values of one uninterrupted process.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from royalty.attribution.contract import run_folder
from royalty.attribution.training.config import TrainConfig
from train_fixtures import TINY, make_folders, royalty

ADAM = ("--optimizer", "adamw", "--lr", "0.002", "--warmup-steps", "2", "--steps", "5", "--weight-decay", "0.01")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("applied")
    return make_folders(root)


@pytest.fixture(scope="module")
def adam_run(folders, tmp_path_factory) -> Path:
    data, targets = folders
    out = tmp_path_factory.mktemp("applied-run") / "run"
    royalty("train", data, "--targets", targets, "--out", out, *TINY, *ADAM, "--checkpoint-every", "2", check=True)
    return out


def _steps(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / run_folder.STEPS)


def test_the_ledger_adds_up_and_names_what_nobody_is_paid_for(adam_run) -> None:
    steps = _steps(adam_run)
    assert list(steps.columns) == list(run_folder.STEP_COLUMNS)
    change = steps["target_loss_before"] - steps["target_loss_after"]
    np.testing.assert_allclose(change, steps["value_sum"] + steps["unattributed"] + steps["residual"], rtol=0, atol=1e-15)
    parts = steps["unattributed_decay"] + steps["unattributed_carried"] + steps["unattributed_beyond"]
    np.testing.assert_allclose(steps["unattributed"], parts, rtol=0, atol=1e-15)
    # weight decay and the warm-up's momentum moved the targets' loss at every step; the
    # default window outlasts a 5-step run, so no batch's momentum went beyond it
    assert (steps["unattributed_decay"] != 0).all() and (steps["unattributed_carried"] != 0).all()
    assert (steps["unattributed_beyond"] == 0).all()
    ledger = json.loads((adam_run / run_folder.MANIFEST).read_text())["ledger"]
    assert ledger["credit"] == "applied" and ledger["exact"] is True and ledger["window_steps"] == 88
    assert ledger["value_sum"] == pytest.approx(steps["value_sum"].sum(), rel=1e-12)
    assert ledger["residual"] == pytest.approx(steps["residual"].sum(), rel=1e-12)
    # the values table holds exactly what the steps credited
    values = pd.read_parquet(adam_run / run_folder.VALUES)
    assert values.groupby("target_id")["value"].sum().mean() == pytest.approx(steps["value_sum"].sum(), rel=1e-9)


def test_a_short_window_reports_the_momentum_it_stops_paying(folders, adam_run, tmp_path) -> None:
    data, targets = folders
    out = tmp_path / "short"
    royalty("train", data, "--targets", targets, "--out", out, *TINY, *ADAM, "--credit-window", "2", check=True)
    short, whole = _steps(out), _steps(adam_run)
    assert (short["unattributed_beyond"].iloc[2:] != 0).all() and (short["unattributed_beyond"].iloc[:2] == 0).all()
    # the same trajectory: what the short window stops paying is what it reports instead
    np.testing.assert_allclose(short["target_loss_after"], whole["target_loss_after"], rtol=0, atol=0)
    np.testing.assert_allclose(short["value_sum"] + short["unattributed"], whole["value_sum"] + whole["unattributed"],
                               rtol=1e-6, atol=1e-12)
    assert json.loads((out / run_folder.MANIFEST).read_text())["ledger"]["window_steps"] == 2


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(folders, adam_run, tmp_path) -> None:
    """The checkpoint holds the batches still being credited: the resumed run pays them as
    the uninterrupted one did, byte for byte."""
    data, targets = folders
    cut = shutil.copytree(adam_run, tmp_path / "cut")
    for done in ("model", run_folder.VALUES, run_folder.STEPS, run_folder.MANIFEST, "checkpoints/step-00000004.pt"):
        path = cut / done
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    royalty("train", data, "--targets", targets, "--out", cut, *TINY, *ADAM, "--checkpoint-every", "2", "--resume", check=True)
    assert (cut / run_folder.VALUES).read_bytes() == (adam_run / run_folder.VALUES).read_bytes()
    assert (cut / run_folder.STEPS).read_bytes() == (adam_run / run_folder.STEPS).read_bytes()


def test_replay_equals_the_run_with_its_own_targets(folders, adam_run) -> None:
    data, targets = folders
    royalty("attribute", adam_run, targets, "--name", "again", "--quiet", check=True)
    got = pd.read_parquet(adam_run / "attributions" / "again" / run_folder.VALUES)
    want = pd.read_parquet(adam_run / run_folder.VALUES)
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-12, atol=0)
    ledger = _steps(adam_run / "attributions" / "again")
    np.testing.assert_allclose(ledger["unattributed"], _steps(adam_run)["unattributed"], rtol=1e-12, atol=0)


def test_gradient_accumulation_values_the_union_of_micro_batches(folders, tmp_path) -> None:
    data, targets = folders
    runs = {}
    for name, batch in (("whole", ("--batch-size", "4")), ("accumulated", ("--batch-size", "2", "--gradient-accumulation-steps", "2"))):
        runs[name] = tmp_path / name
        royalty("train", data, "--targets", targets, "--out", runs[name], *TINY, *ADAM, *batch, check=True)
    a, b = (pd.read_parquet(runs[n] / run_folder.VALUES) for n in ("whole", "accumulated"))
    # the micro-batches sum their gradients in another order: float32 rounding, through Adam
    scale = float(np.abs(a["value"]).max())
    assert float(np.abs(a["value"] - b["value"]).max()) <= 1e-3 * scale
    np.testing.assert_allclose(_steps(runs["whole"])["unattributed"], _steps(runs["accumulated"])["unattributed"], rtol=1e-3)


def test_plain_sgd_is_credited_as_before_and_owes_nothing_unattributed(folders, tmp_path) -> None:
    data, targets = folders
    runs = {}
    for credit in ("applied", "own-step"):
        runs[credit] = tmp_path / credit
        royalty("train", data, "--targets", targets, "--out", runs[credit], *TINY, "--steps", "3", "--credit", credit, check=True)
    assert (runs["applied"] / run_folder.VALUES).read_bytes() == (runs["own-step"] / run_folder.VALUES).read_bytes()
    steps = _steps(runs["applied"])
    assert (steps["unattributed"] == 0).all()


def test_own_step_adamw_leaves_the_unattributed_parts_uncomputed(folders, tmp_path) -> None:
    data, targets = folders
    out = tmp_path / "own"
    royalty("train", data, "--targets", targets, "--out", out, *TINY, *ADAM, "--credit", "own-step", check=True)
    steps = _steps(out)
    assert steps["unattributed"].isna().all() and steps["residual"].isna().all() and steps["value_sum"].notna().all()
    ledger = json.loads((out / run_folder.MANIFEST).read_text())["ledger"]
    assert ledger["credit"] == "own-step" and ledger["exact"] is False and ledger["residual"] is None


@pytest.mark.parametrize("bad", [("--credit", "momentum"), ("--credit-window", "0")])
def test_bad_credit_options_are_usage_errors(folders, tmp_path, bad) -> None:
    data, targets = folders
    proc = royalty("train", data, "--targets", targets, "--out", tmp_path / "bad", *TINY, *bad)
    assert proc.returncode == 2 and bad[0] in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_a_run_recorded_before_the_choice_means_own_step() -> None:
    doc = TrainConfig(data=Path("d"), targets=Path("t"), out=Path("o"), optimizer="adamw", credit="own-step").to_json()
    del doc["credit"], doc["credit_window"], doc["curvature"]  # none of them existed then
    old = TrainConfig.from_json(doc)
    assert old.credit == "own-step" and not old.applied_credit
    # and its recipe (so its run id) is the one it was recorded with: the hash of the
    # recorded config, which never had the new keys
    later = {"gradient_accumulation_steps": 1, "mixed_precision": "no", "device": "cpu", "train_max_timestep": None,
             "allow_duplicates": False, "caption_column": None, "allow_empty_captions": False,
             "lora_rank": None, "lora_alpha": None, "lora_targets": None}
    recorded = {k: v for k, v in doc.items() if k != "out" and later.get(k, object()) != v}
    assert old.recipe_hash() == hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest()
    assert TrainConfig.from_json(doc, credit="applied").recipe_hash() != old.recipe_hash()


def test_the_report_shows_the_ledger(adam_run, tmp_path) -> None:
    page = tmp_path / "report.html"
    royalty("report", adam_run, "--out", page, "--quiet", check=True)
    html = page.read_text()
    steps = _steps(adam_run)
    change = (steps["target_loss_before"] - steps["target_loss_after"]).sum()
    assert "Σ unattributed" in html and "Σ residual" in html and "per-step r, values + unattributed" in html
    share = abs(steps["residual"].sum()) / abs(change)
    assert f"({100 * share:.1f} % of the change)" in html


def test_one_step_credits_the_bias_corrected_share_of_its_own_gradient(folders, tmp_path) -> None:
    """One valued step after two warm-up steps: AdamW applies (1 − β1)/(1 − β1³) of its batch's
    gradient through m̂, so the applied values are the own-step ones times that — in the run
    and in the checkpoints mode alike."""
    data, targets = folders
    recipe = ("--optimizer", "adamw", "--lr", "0.002", "--warmup-steps", "2", "--steps", "1", "--checkpoint-every", "1")
    runs = {}
    for credit in ("applied", "own-step"):
        runs[credit] = tmp_path / credit
        royalty("train", data, "--targets", targets, "--out", runs[credit], *TINY, *recipe, "--credit", credit, check=True)
        royalty("attribute", runs[credit], targets, "--mode", "checkpoints", "--name", "ck", "--quiet", check=True)
    share = (1 - 0.9) / (1 - 0.9**3)
    for values in (run_folder.VALUES, f"attributions/ck/{run_folder.VALUES}"):
        applied, own = (pd.read_parquet(runs[c] / values)["value_first_order"] for c in ("applied", "own-step"))
        assert float(own.abs().max()) > 0
        np.testing.assert_allclose(applied, share * own, rtol=1e-5, atol=1e-12 * float(own.abs().max()))
