"""Run folders for payout tests, built the way `royalty train` leaves them.

A real trained run is not needed to test payout: it reads only values.parquet and
run.json, so the tests write those two files with the contract of run_folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from royalty.attribution.contract import run_folder

ROWS = Sequence[tuple[str, str, str, float]]  # (sample_id, owner, target_id, value)


def values_frame(rows: ROWS, specific: Iterable[float] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["sample_id", "owner", "target_id", "value"])
    frame["value"] = frame["value"].astype("float64")
    frame["value_first_order"] = frame["value"]
    frame["value_second_order"] = 0.0
    if specific is not None:
        frame[run_folder.SPECIFIC_COLUMN] = list(specific)
    return frame


def make_run(
    root: Path,
    rows: ROWS | pd.DataFrame,
    *,
    specific: Iterable[float] | None = None,
    run_id: str = "run-test-1",
    extra_manifest: dict[str, Any] | None = None,
) -> Path:
    """Write values.parquet, a small model folder and run.json; return the run folder."""
    root.mkdir(parents=True, exist_ok=True)
    frame = rows if isinstance(rows, pd.DataFrame) else values_frame(rows, specific)
    frame.to_parquet(root / run_folder.VALUES, index=False)
    (root / run_folder.MODEL_DIR).mkdir(exist_ok=True)
    (root / run_folder.MODEL_DIR / "model_index.json").write_text('{"_class_name": "DDPMPipeline"}\n')
    manifest: dict[str, Any] = {
        "format_version": run_folder.FORMAT_VERSION,
        "run_id": run_id,
        "inputs": {"a.png": "0" * 64, "b.png": "1" * 64},
        "outputs": run_folder.output_hashes(root),
    }
    manifest.update(extra_manifest or {})
    run_folder.write_manifest(root, manifest)
    return root


def simple_rows() -> list[tuple[str, str, str, float]]:
    """Three owners, two targets: alice clearly ahead, carol negative overall."""
    return [
        ("a1", "alice", "t1", 3.0),
        ("a1", "alice", "t2", 1.0),
        ("a2", "alice", "t1", 1.0),
        ("a2", "alice", "t2", 1.0),
        ("b1", "bob", "t1", 1.0),
        ("b1", "bob", "t2", 2.0),
        ("c1", "carol", "t1", -1.0),
        ("c1", "carol", "t2", -0.5),
    ]


def royalty(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None, script: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would (`python -m royalty.cli`, or `script`)."""
    full_env = {**os.environ, "NO_COLOR": "1", "SOURCE_DATE_EPOCH": "1700000000", **(env or {})}
    command = [str(script)] if script else [sys.executable, "-m", "royalty.cli"]
    return subprocess.run(
        [*command, *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        check=False,
    )


def load_json(text: str) -> Any:
    return json.loads(text)


def royalty_batch(
    cases: Sequence[tuple[Sequence[str | os.PathLike[str]], dict[str, str] | None]],
    tty_stderr: Sequence[int] = (),
) -> list[subprocess.CompletedProcess[str]]:
    """Run many command lines, one child process each, paying the CLI import once.

    Cases whose index is in `tty_stderr` run with stderr on a pseudo-terminal.
    """
    payload = [
        {"args": [str(a) for a in args], "env": env or {}, "tty_stderr": i in tty_stderr}
        for i, (args, env) in enumerate(cases)
    ]
    runner = Path(__file__).with_name("payout_cli_batch.py")
    full_env = {**os.environ, "NO_COLOR": "1", "SOURCE_DATE_EPOCH": "1700000000"}
    done = subprocess.run(
        [sys.executable, str(runner)], input=json.dumps(payload), capture_output=True, text=True, env=full_env, check=True
    )
    return [
        subprocess.CompletedProcess([*map(str, args)], r["returncode"], r["stdout"], r["stderr"])
        for (args, _), r in zip(cases, json.loads(done.stdout))
    ]
