"""`royalty train --order 2 --curvature secant`, end to end.

The secant curvature takes H_k Δw_t as ∇ℓ_k(w_{t+1}) − ∇ℓ_k(w_t) (docs/design.md §1.6);
its arithmetic is tested against the float64 reference in test_applied_credit_exact.py.
Here: it accounts for the run as the Hessian-vector products do, and the ways a run can be
cut into pieces (resume, replay, micro-batches) keep the values of one uninterrupted process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from royalty.attribution.contract import run_folder
from train_fixtures import TINY, make_folders, royalty

# a step small enough for the expansion along it to converge (at 0.002 even order 1 misses 5x the change)
ADAM = ("--optimizer", "adamw", "--lr", "0.0002", "--warmup-steps", "2", "--steps", "5", "--weight-decay", "0.01")
SECANT = ("--order", "2", "--curvature", "secant")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("secant")
    return make_folders(root)


@pytest.fixture(scope="module")
def runs(folders, tmp_path_factory) -> dict[str, Path]:
    """The same AdamW trajectory valued at first order, with Hessian-vector products and by the secant."""
    data, targets = folders
    root = tmp_path_factory.mktemp("secant-runs")
    out = {}
    for name, order in (("first", ("--order", "1")), ("hessian", ("--order", "2")), ("secant", SECANT)):
        out[name] = root / name
        extra = ("--checkpoint-every", "2") if name == "secant" else ()
        royalty("train", data, "--targets", targets, "--out", out[name], *TINY, *ADAM, *order, *extra, check=True)
    return out


def _steps(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / run_folder.STEPS)


def _values(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / run_folder.VALUES)


def test_the_secant_walks_the_same_weights_and_credits_the_same_first_order(runs) -> None:
    first, hessian, secant = (_values(runs[n]) for n in ("first", "hessian", "secant"))
    np.testing.assert_array_equal(secant["value_first_order"], first["value_first_order"])
    np.testing.assert_array_equal(secant["value_first_order"], hessian["value_first_order"])
    for name in ("hessian", "first"):
        np.testing.assert_array_equal(_steps(runs["secant"])["target_loss_after"], _steps(runs[name])["target_loss_after"])


def test_the_secant_second_order_term_is_the_hessians_to_within_a_higher_order(runs) -> None:
    hessian, secant = _values(runs["hessian"]), _values(runs["secant"])
    h, s = hessian["value_second_order"].to_numpy(), secant["value_second_order"].to_numpy()
    assert np.abs(h).max() > 0
    # they differ by a term of order Δw³ where the second-order term is of order Δw²
    # (how the gap shrinks with the step: test_applied_credit_exact.py, in float64)
    assert np.abs(s - h).max() <= 0.4 * np.abs(h).max()
    assert np.corrcoef(s, h)[0, 1] > 0.9


def test_the_secant_ledger_reconciles_as_the_hessians_does(runs) -> None:
    residual = {name: float(_steps(runs[name])["residual"].abs().sum()) for name in runs}
    change = float((_steps(runs["first"])["target_loss_before"] - _steps(runs["first"])["target_loss_after"]).abs().sum())
    assert residual["first"] > 5 * residual["secant"] and residual["secant"] < 1.5 * residual["hessian"]
    assert residual["secant"] <= 0.02 * change
    steps = _steps(runs["secant"])
    np.testing.assert_allclose(steps["target_loss_before"] - steps["target_loss_after"],
                               steps["value_sum"] + steps["unattributed"] + steps["residual"], rtol=0, atol=1e-15)
    ledger = json.loads((runs["secant"] / run_folder.MANIFEST).read_text())["ledger"]
    assert ledger["curvature"] == "secant" and ledger["exact"] is True
    assert json.loads((runs["first"] / run_folder.MANIFEST).read_text())["ledger"]["curvature"] is None


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(folders, runs, tmp_path) -> None:
    """The resumed run evaluates anew the targets the interrupted one had taken after its last step."""
    data, targets = folders
    cut = shutil.copytree(runs["secant"], tmp_path / "cut")
    for done in ("model", run_folder.VALUES, run_folder.STEPS, run_folder.MANIFEST, "checkpoints/step-00000004.pt"):
        path = cut / done
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    royalty("train", data, "--targets", targets, "--out", cut, *TINY, *ADAM, *SECANT, "--checkpoint-every", "2", "--resume", check=True)
    assert (cut / run_folder.VALUES).read_bytes() == (runs["secant"] / run_folder.VALUES).read_bytes()
    assert (cut / run_folder.STEPS).read_bytes() == (runs["secant"] / run_folder.STEPS).read_bytes()


def test_replay_equals_the_run_with_its_own_targets(folders, runs) -> None:
    run = runs["secant"]
    royalty("attribute", run, folders[1], "--name", "again", "--quiet", check=True)
    got = _values(run / "attributions" / "again")
    np.testing.assert_allclose(got["value"], _values(run)["value"], rtol=1e-12, atol=0)
    doc = json.loads((run / "attributions" / "again" / "attribution.json").read_text())
    assert (doc["order"], doc["curvature"]) == (2, "secant")


def test_gradient_accumulation_values_the_union_of_micro_batches(folders, tmp_path) -> None:
    """The secant's pass is over the targets alone: 2 micro-batches of 2 rows value as one batch of 4,
    up to the float32 rounding of summing the micro-batches' gradients in another order, through Adam."""
    data, targets = folders
    runs = {}
    for name, batch in (("whole", ("--batch-size", "4")), ("accumulated", ("--batch-size", "2", "--gradient-accumulation-steps", "2"))):
        runs[name] = tmp_path / name
        royalty("train", data, "--targets", targets, "--out", runs[name], *TINY, *ADAM, *SECANT, *batch, check=True)
    a, b = (_values(runs[n]) for n in ("whole", "accumulated"))
    for column in ("value", "value_second_order"):
        scale = float(np.abs(a[column]).max())
        assert scale > 0 and float(np.abs(a[column] - b[column]).max()) <= 1e-3 * scale


@pytest.mark.parametrize("kind", ["subset", "rotation"])
def test_estimators_that_change_targets_each_step_take_the_secant_on_the_steps_own(folders, tmp_path, kind) -> None:
    """`subset` and `rotation` (as `fresh`) evaluate other targets at every step: the pass
    after a step is of that step's own, not reused by the next (and its values are
    reweighted K/S: one of the two targets a step, × 2)."""
    estimator = ("--estimator", kind, "--target-subset", "1")
    data, targets = folders
    out = {}
    for name, order in (("first", ("--order", "1")), ("secant", SECANT)):
        out[name] = tmp_path / name
        royalty("train", data, "--targets", targets, "--out", out[name], *TINY, *ADAM, *estimator, *order, check=True)
    first, secant = _steps(out["first"]), _steps(out["secant"])
    np.testing.assert_array_equal(secant["target_loss_after"], first["target_loss_after"])
    assert float(secant["residual"].abs().sum()) < 0.2 * float(first["residual"].abs().sum())
    # a replay with the run's own targets takes the same share at every step
    royalty("attribute", out["secant"], targets, "--name", "again", "--quiet", check=True)
    np.testing.assert_array_equal(_values(out["secant"] / "attributions" / "again")["value"], _values(out["secant"])["value"])


def test_plain_sgd_with_the_secant_is_credited_through_the_applied_update(folders, tmp_path) -> None:
    """SGD's own-step computation has no secant: the run credits the applied update (β1 = 0, one step)."""
    data, targets = folders
    out = {}
    for name, order in (("own", ("--order", "2")), ("secant", SECANT)):
        out[name] = tmp_path / name
        royalty("train", data, "--targets", targets, "--out", out[name], *TINY, "--lr", "0.005", "--steps", "3", *order, check=True)
    own, secant = _values(out["own"]), _values(out["secant"])
    scale = float(np.abs(own["value_first_order"]).max())
    np.testing.assert_allclose(secant["value_first_order"], own["value_first_order"], rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(secant["value_second_order"], own["value_second_order"], rtol=0,
                               atol=0.05 * float(np.abs(own["value_second_order"]).max()))
    assert json.loads((out["secant"] / run_folder.MANIFEST).read_text())["ledger"]["credit"] == "applied"


@pytest.mark.parametrize("bad", [
    ("--curvature", "newton"),
    ("--curvature", "secant"),  # at order 1
    ("--order", "2", "--curvature", "secant", "--credit", "own-step"),
], ids=["unknown", "order-1", "own-step"])
def test_bad_curvature_options_are_usage_errors(folders, tmp_path, bad) -> None:
    data, targets = folders
    proc = royalty("train", data, "--targets", targets, "--out", tmp_path / "bad", *TINY, *bad)
    assert proc.returncode == 2 and "--curvature" in proc.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("given, want", [
    ({}, (2, "secant")),
    ({"credit": "own-step"}, (1, "hessian")),  # the secant needs the applied credit: the recipe falls back to order 1
    ({"credit": "own-step", "order": 2}, (2, "hessian")),
    ({"order": 1}, (1, "hessian")),  # first order takes no curvature
    ({"order": 2, "curvature": "hessian"}, (2, "hessian")),
    ({"order": 1, "curvature": "secant"}, (1, "secant")),  # given: TrainConfig refuses it
], ids=["recipe", "own-step", "own-step-order-2", "order-1", "hessian", "given-secant-order-1"])
def test_the_fine_tune_recipe_takes_second_order_by_the_secant_where_it_can(given, want) -> None:
    from royalty.attribution.training.config import FINE_TUNE, FROM_SCRATCH, recipe_options

    credit = given.pop("credit", "applied")
    got = recipe_options(FINE_TUNE, credit, **given)
    assert (got["order"], got["curvature"]) == want
    scratch = recipe_options(FROM_SCRATCH, credit)
    assert (scratch["order"], scratch["curvature"]) == (1, "hessian")


def test_the_report_says_how_the_curvature_was_taken(runs, tmp_path) -> None:
    page = tmp_path / "report.html"
    royalty("report", runs["secant"], "--out", page, "--quiet", check=True)
    assert "2 (secant)" in page.read_text()
    royalty("report", runs["hessian"], "--out", page, "--quiet", check=True)
    assert "2 (hessian)" in page.read_text()
