"""`royalty audit` as a user runs it: the real CLI, each command line a process of its own
(train_fixtures.royalty), on a tiny 3-owner run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit_fixtures import TRAIN_ARGS, make_data, make_targets
from royalty.attribution.contract import run_folder
from royalty.attribution.audit.metrics import agreement
from royalty.attribution.audit.state import AUDIT_DIR, BASE, COALITIONS, coalitions_file
from royalty.attribution.audit.subset_linear import linear_subset_shapley
from train_fixtures import royalty

OWNERS = ["ann", "bob", "cy"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    data, targets = make_data(root / "train"), make_targets(root / "targets")
    out = root / "run"
    # order 2: the audit's second-order report is exercised too
    royalty("train", data, "--targets", targets, "--out", out, "--order", "2", *TRAIN_ARGS, check=True)
    return out


@pytest.fixture(scope="module")
def audited(trained, tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("audited") / "run"
    shutil.copytree(trained, run)
    proc = royalty("audit", run, "--seeds", "2", "--quiet", check=True)
    return run, json.loads(proc.stdout)


def copy_run(trained: Path, dest: Path) -> Path:
    shutil.copytree(trained, dest, ignore=shutil.ignore_patterns(AUDIT_DIR))
    return dest


def test_json_contract(audited) -> None:
    run, doc = audited
    assert doc["format_version"] == 1 and doc["complete"] is True
    game = doc["game"]
    assert game["players"] == OWNERS and game["background_owners"] == [] and game["method"] == "exact"
    assert game["seeds_complete"] == [0, 1] and game["retraining_seeds"] == [0, 1000]
    cost = doc["cost"]
    assert cost["retrainings_needed"] == cost["retrainings_done"] == cost["retrainings_run_now"] == 2 * 7
    assert cost["seconds"] > 0 and cost["seconds_per_retraining"] > 0
    # the rebuilt base is the run's, and retraining everyone with seed 0 is the run itself
    assert doc["checks"]["base_matches_run"] is True
    assert doc["checks"]["grand_coalition_reproduces_run"] is True

    raw = doc["summary"]["raw"]
    for name in ("in_run_vs_retraining", "in_run_vs_one_seed", "noise_floor", "in_run_linear_subset_vs_retraining"):
        m = raw[name]
        assert -1 <= m["spearman_mean"] <= 1 and 0 <= m["sign_agreement"] <= 1
        assert 0 <= m["l1_share_distance"] <= 2 and 0 <= m["top_owner_agreement"] <= 1
    assert raw["noise_floor"]["of"] == 1 and raw["in_run_vs_one_seed"]["of"] == 2
    assert "specific" in doc["summary"] and "first_order_only" in doc["summary"]
    # leave-one-out against retraining, recomputed from the per-target tables the document lists
    loo = np.array([[t["leave_one_out"][o] for t in doc["targets"]] for o in OWNERS])
    phi = np.array([[t["retraining_shapley"][o] for t in doc["targets"]] for o in OWNERS])
    assert doc["summary"]["leave_one_out_vs_retraining"] == agreement(loo, phi)

    # efficiency of the retraining game: seed 0's Shapley values add up to the run's change
    targets = doc["targets"]
    assert [t["target_id"] for t in targets] == ["cross-ann", "cross-bob", "cross-cy"]
    seed0_total = np.mean([sum(t["retraining_shapley_by_seed"][0].values()) for t in targets])
    assert seed0_total == pytest.approx(doc["second_order"]["actual_change_mean"], rel=1e-9)
    # the second-order verdict, recomputed: each target's actual change is its seed-0 game total
    actual = np.array([sum(t["retraining_shapley_by_seed"][0].values()) for t in targets])
    by_target = pd.read_parquet(run / run_folder.VALUES).groupby("target_id")[["value", "value_first_order"]].sum()
    gaps = {c: float(np.abs(by_target[c].reindex([t["target_id"] for t in targets]).to_numpy() - actual).mean())
            for c in ("value", "value_first_order")}
    second = doc["second_order"]
    assert second["first_order"]["mean_abs_gap"] == pytest.approx(gaps["value_first_order"], rel=1e-9)
    assert second["with_second_order"]["mean_abs_gap"] == pytest.approx(gaps["value"], rel=1e-9)
    assert second["second_order_closes_gap"] is (gaps["value"] < gaps["value_first_order"])

    # in-run owner values are the run's values.parquet summed by owner and target
    values = pd.read_parquet(run / run_folder.VALUES)
    sums = values.groupby(["owner", "target_id"])["value"].sum()
    for t in targets:
        for owner in OWNERS:
            assert t["in_run"][owner] == pytest.approx(sums[(owner, t["target_id"])], rel=1e-12)
    assert [o["owner"] for o in doc["owners"]] == OWNERS
    assert sum(o["share_retraining"] for o in doc["owners"]) == pytest.approx(1.0)

    # owner accuracy, recounted from the per-target tables and the targets' own owner column
    assert [t["owner"] for t in targets] == OWNERS  # audit_fixtures: target cross-X is X's style
    accuracy = doc["owner_accuracy"]
    assert accuracy["targets"] == 3
    assert set(accuracy["by_basis"]) == {"in_run", "in_run_specific", "retraining_shapley",
                                         "retraining_shapley_specific", "leave_one_out"}  # fmt: skip
    specific_in_run = values.groupby(["owner", "target_id"])["value_specific"].sum()
    tables = {
        "in_run": lambda t: t["in_run"],
        "in_run_specific": lambda t: {o: specific_in_run[(o, t["target_id"])] for o in OWNERS},
        "retraining_shapley": lambda t: t["retraining_shapley"],
        # the contrast game (reference: the mean over targets) by linearity
        "retraining_shapley_specific": lambda t: {
            o: t["retraining_shapley"][o] - np.mean([u["retraining_shapley"][o] for u in targets]) for o in OWNERS},
        "leave_one_out": lambda t: t["leave_one_out"],
    }
    for basis, table in tables.items():
        hits = sum(max(OWNERS, key=table(t).__getitem__) == t["owner"] for t in targets)
        assert accuracy["by_basis"][basis] == {"hits": hits, "share": hits / 3}, basis

    eff = doc["efficiency"]
    steps = pd.read_parquet(run / run_folder.STEPS)
    assert eff["steps"] == steps["step"].tolist()
    assert eff["total_value_sum"] == pytest.approx(steps["value_sum"].sum())

    lines = (run / AUDIT_DIR / COALITIONS).read_text().splitlines()
    assert len(lines) == 14 and all(json.loads(line)["owners"] for line in lines)


def test_resume_runs_only_the_missing_retrainings_and_gives_the_same_values(audited, tmp_path) -> None:
    full_run, full = audited
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    state = run / AUDIT_DIR / COALITIONS
    seed0 = [line for line in state.read_text().splitlines() if json.loads(line)["seed_index"] == 0]
    state.write_text("\n".join(seed0[:3]) + "\n")  # as if killed after 3 retrainings
    proc = royalty("audit", run, "--seeds", "1", "--quiet", check=True)
    doc = json.loads(proc.stdout)
    assert doc["cost"]["retrainings_stored_before"] == 3 and doc["cost"]["retrainings_run_now"] == 4
    assert doc["cost"]["base_seconds"] == 0  # base.pt: no second warm-up
    assert doc["complete"] is True
    # deterministic retraining: the resumed audit's values are the uninterrupted one's
    for a, b in zip(doc["targets"], full["targets"]):
        assert a["retraining_shapley"] == b["retraining_shapley_by_seed"][0]
    assert doc["summary"]["raw"]["noise_floor"] is None  # one seed: no floor


def test_batch_mask_game_of_one_step_is_the_in_run_value_up_to_third_order(tmp_path) -> None:
    """One SGD step: batch-mask retraining of coalition S is w − (η/B)·Σ_S ∇ℓ, exactly the
    local game whose Shapley value the in-run first + second order terms are, up to O(η³).

    An independent check of the engine (no per-sample gradient is involved on the
    retraining side), and of the second-order term: it must close most of the first-order
    gap. At η = 0.002 the third-order remainder is ~(ηλ)² ≈ 1e-4 of the value (measured
    1.7e-4 of the largest value); the bound 1e-3 leaves room for float32 losses, and would
    still catch a wrong factor, sign, batch scaling or a missing layer.
    """
    data, targets = make_data(tmp_path / "train"), make_targets(tmp_path / "targets")
    run = tmp_path / "run"
    # TRAIN_ARGS with a ten times smaller lr and one valued step (later options win)
    royalty("train", data, "--targets", targets, "--out", run, *TRAIN_ARGS, "--lr", "0.002", "--steps", "1", "--order", "2", check=True)
    subset = json.loads(royalty("audit", run, "--seeds", "1", "--quiet", check=True).stdout)
    doc = json.loads(royalty("audit", run, "--seeds", "1", "--game", "batch-mask", "--quiet", check=True).stdout)
    assert doc["game"]["game"] == "batch-mask" and subset["game"]["game"] == "subset"
    # the linear-limit map is the subset game's; batch-mask's linear limit is the values themselves
    assert "in_run_linear_subset_vs_retraining" not in doc["summary"]["raw"]
    assert "in_run_linear_subset_vs_retraining" in subset["summary"]["raw"]
    assert doc["checks"]["grand_coalition_reproduces_run"] is True
    # each game keeps its own retrainings
    for game in ("subset", "batch-mask"):
        assert len((run / AUDIT_DIR / coalitions_file(game)).read_text().splitlines()) == 7

    values = pd.read_parquet(run / run_folder.VALUES)
    sums = values.groupby(["owner", "target_id"])[["value", "value_first_order"]].sum()
    phi, full, first = [], [], []
    for t in doc["targets"]:
        for owner, v in t["retraining_shapley"].items():
            phi.append(v)
            full.append(sums.loc[(owner, t["target_id"]), "value"])
            first.append(sums.loc[(owner, t["target_id"]), "value_first_order"])
    phi, full, first = np.array(phi), np.array(full), np.array(first)
    scale = np.abs(phi).max()
    assert scale > 0
    assert np.abs(phi - full).max() <= 1e-3 * scale
    assert np.abs(phi - full).max() <= 0.1 * np.abs(phi - first).max()


def test_accumulated_run_is_retrained_with_its_own_micro_batches(tmp_path) -> None:
    """--gradient-accumulation-steps: retraining everyone (with --owners 1, one of the two
    retrainings: the background alone, and the audited owner plus it) must be the run bit for bit."""
    data, targets = make_data(tmp_path / "train"), make_targets(tmp_path / "targets")
    run = tmp_path / "run"
    royalty("train", data, "--targets", targets, "--out", run, *TRAIN_ARGS, "--gradient-accumulation-steps", "2", check=True)
    doc = json.loads(royalty("audit", run, "--owners", "1", "--seeds", "1", "--quiet", check=True).stdout)
    assert doc["cost"]["retrainings_run_now"] == 2
    assert doc["checks"]["base_matches_run"] is True
    assert doc["checks"]["grand_coalition_reproduces_run"] is True


def test_audit_retrains_with_the_runs_cpu_threads(tmp_path) -> None:
    """A run trained on two threads, audited on one: retraining everyone must still be the
    run bit for bit (two threads add a kernel's partial sums in another order)."""
    data, targets = make_data(tmp_path / "train"), make_targets(tmp_path / "targets")
    run = tmp_path / "run"
    royalty("train", data, "--targets", targets, "--out", run, *TRAIN_ARGS, threads=2, fresh=True, check=True)
    doc = json.loads(royalty("audit", run, "--owners", "1", "--seeds", "1", "--quiet", threads=1, fresh=True, check=True).stdout)
    assert doc["checks"]["grand_coalition_reproduces_run"] is True


def test_budget_stops_cleanly_then_resumes(trained, tmp_path) -> None:
    run = copy_run(trained, tmp_path / "run")
    proc = royalty("audit", run, "--seeds", "1", "--budget", "0.0001")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["complete"] is False and doc["summary"] is None and doc["cost"]["stopped_by_budget"] is True
    assert "resume" in proc.stderr
    assert re.search(r"^retrainings: 0/\d+ \(0%\), elapsed", proc.stderr, flags=re.M), proc.stderr  # stderr is a pipe: plain lines
    assert (run / AUDIT_DIR / BASE).is_file()


def test_owners_n_keeps_the_others_in_every_coalition(audited) -> None:
    """--owners 2: the third owner is background; its coalitions are the full game's, already stored."""
    run, full = audited
    proc = royalty("audit", run, "--owners", "2", "--seeds", "1", "--format", "table", check=True)
    assert "owners (summed over targets)" in proc.stdout  # --format table: the table is the document
    # two of the three targets name an audited owner
    assert re.search(r"owner accuracy \(2 targets .*in-run \d/2, in-run specific \d/2, retraining Shapley \d/2", proc.stdout), proc.stdout
    proc = royalty("audit", run, "--owners", "2", "--seeds", "1", "--quiet", check=True)
    doc = json.loads(proc.stdout)
    players = doc["game"]["players"]
    assert len(players) == 2 and len(doc["game"]["background_owners"]) == 1
    assert doc["cost"]["retrainings_run_now"] == 0 and doc["cost"]["retrainings_needed"] == 4
    # leave-one-out with everyone else kept is the full game's leave-one-out
    full_loo = {o["owner"]: o["leave_one_out"] for o in full["owners"]}
    mine = {o["owner"]: o["leave_one_out"] for o in doc["owners"]}
    seed0 = json.loads(royalty("audit", run, "--seeds", "1", "--quiet", check=True).stdout)
    seed0_loo = {o["owner"]: o["leave_one_out"] for o in seed0["owners"]}
    for p in players:
        assert mine[p] == pytest.approx(seed0_loo[p], rel=1e-12, abs=1e-15)
    assert set(full_loo) == set(OWNERS)

    # the linear-limit map keeps the background owner in every coalition too (2 images each)
    sums = pd.read_parquet(run / run_folder.VALUES).groupby(["owner", "target_id"])["value"].sum()
    ids = [t["target_id"] for t in doc["targets"]]
    (rest,) = doc["game"]["background_owners"]
    mapped = linear_subset_shapley(
        np.array([[sums[(p, t)] for t in ids] for p in players]), [2, 2], np.array([sums[(rest, t)] for t in ids]), 2)
    phi = np.array([[t["retraining_shapley"][p] for t in doc["targets"]] for p in players])
    got = doc["summary"]["raw"]["in_run_linear_subset_vs_retraining"]
    want = agreement(mapped, phi)
    for key in ("sign_agreement", "l1_share_distance", "top_owner_agreement"):
        assert got[key] == pytest.approx(want[key], rel=1e-9), key


@pytest.mark.parametrize(
    "args, code",
    [
        (["--owners", "many"], 2),
        (["--owners", "0"], 2),
        (["--seeds", "0"], 2),
        (["--budget", "-1"], 2),
        (["--game", "everyone"], 2),
    ],
)
def test_usage_errors(trained, args, code) -> None:
    proc = royalty("audit", trained, *args)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""


def test_missing_run(tmp_path) -> None:
    assert royalty("audit", tmp_path / "nope").returncode == 66
    (tmp_path / "empty").mkdir()
    assert royalty("audit", tmp_path / "empty").returncode == 66


def test_tampered_values_and_changed_images_are_refused(trained, tmp_path) -> None:
    run = copy_run(trained, tmp_path / "run")
    values = pd.read_parquet(run / run_folder.VALUES)
    values.loc[0, "value"] += 1.0
    values.to_parquet(run / run_folder.VALUES, index=False)
    proc = royalty("audit", run)
    assert proc.returncode == 65 and "does not match its manifest" in proc.stderr

    run = copy_run(trained, tmp_path / "run2")
    manifest = json.loads((run / run_folder.MANIFEST).read_text())
    image = Path(manifest["input_folders"]["train"]) / "ann_circle.png"
    moved = copy_run_inputs(manifest, tmp_path / "inputs")
    Image.new("RGB", (16, 16), (0, 0, 0)).save(moved / "ann_circle.png")
    manifest["input_folders"]["train"] = str(moved)
    (run / run_folder.MANIFEST).write_text(json.dumps(manifest))
    proc = royalty("audit", run)
    assert proc.returncode == 65 and "differ from what the run recorded" in proc.stderr
    assert image.is_file()


def copy_run_inputs(manifest: dict, dest: Path) -> Path:
    shutil.copytree(manifest["input_folders"]["train"], dest)
    return dest


def test_damaged_state_file_is_refused(trained, tmp_path) -> None:
    run = copy_run(trained, tmp_path / "run")
    (run / AUDIT_DIR).mkdir()
    (run / AUDIT_DIR / COALITIONS).write_text("{not json\n")
    proc = royalty("audit", run, "--seeds", "1")
    assert proc.returncode == 65 and "delete the file" in proc.stderr


def test_run_without_values_is_refused(trained, tmp_path) -> None:
    run = copy_run(trained, tmp_path / "run")
    manifest = json.loads((run / run_folder.MANIFEST).read_text())
    manifest["config"]["values"] = False
    (run / run_folder.MANIFEST).write_text(json.dumps(manifest))
    proc = royalty("audit", run)
    assert proc.returncode == 65 and "--no-values" in proc.stderr
