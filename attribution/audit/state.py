"""The audit's resumable state inside the run folder: `RUN/audit/`.

- `coalitions.jsonl` (`coalitions-batch-mask.jsonl` for `--game batch-mask`, so the
  two games keep their own retrainings): one line per finished retraining — which owners it trained on,
  which retraining seed, the target losses it ended at. The whole file is rewritten
  atomically after each retraining (temporary file + rename), so a killed audit leaves
  every finished retraining on disk and never a torn line; the next audit resumes.
- `base.pt`: the model and optimizer state after the warm-up (every retraining starts
  from it), so a resumed audit does not warm up again.

Every record carries the game's fingerprint (recipe, inputs, versions: what decides a
retraining's result); records of another game — the run was retrained with --force, or
royalty was upgraded — are ignored and dropped on the next write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from royalty.atomic import atomic_path, write_text
from royalty.errors import DataError

AUDIT_DIR = "audit"
COALITIONS = "coalitions.jsonl"
BASE = "base.pt"

GAMES = ("subset", "batch-mask")  # how a coalition retrains: see audit_retrain
Key = tuple[frozenset[str], int]  # (owners trained on, retraining seed index)


@dataclass(frozen=True)
class Retraining:
    owners: frozenset[str]
    seed_index: int
    losses: tuple[float, ...]  # per value-target column (targets, then the reference if any)
    seconds: float
    weights_sha256: str

    @property
    def key(self) -> Key:
        return (self.owners, self.seed_index)


def coalitions_file(game: str) -> str:
    return COALITIONS if game == "subset" else f"coalitions-{game}.jsonl"


class CoalitionStore:
    def __init__(self, run_dir: Path, fingerprint: str, game: str = "subset") -> None:
        self.dir = Path(run_dir) / AUDIT_DIR
        self.path = self.dir / coalitions_file(game)
        self.fingerprint = fingerprint
        self.records: dict[Key, Retraining] = {}
        self.stale = 0  # lines of another game, ignored
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                if doc["fingerprint"] != self.fingerprint:
                    self.stale += 1
                    continue
                record = Retraining(
                    frozenset(doc["owners"]), int(doc["seed_index"]), tuple(float(x) for x in doc["losses"]),
                    float(doc["seconds"]), str(doc["weights_sha256"]),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(
                    f"{self.path} line {number} is not an audit record ({exc}); delete the file to start the audit over"
                ) from exc
            self.records[record.key] = record

    def get(self, key: Key) -> Retraining | None:
        return self.records.get(key)

    def add(self, record: Retraining) -> None:
        self.records[record.key] = record
        lines = [json.dumps(self._doc(r), sort_keys=True) for r in self.records.values()]
        write_text(self.path, "\n".join(lines) + "\n")

    def _doc(self, r: Retraining) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "owners": sorted(r.owners),
            "seed_index": r.seed_index,
            "losses": list(r.losses),
            "seconds": round(r.seconds, 3),
            "weights_sha256": r.weights_sha256,
        }

    # base.pt: torch is imported by the caller; only the path and the atomic write live here
    @property
    def base_path(self) -> Path:
        return self.dir / BASE

    def save_base(self, state: dict[str, Any]) -> None:
        import torch

        with atomic_path(self.base_path) as tmp:
            torch.save({**state, "fingerprint": self.fingerprint}, tmp)

    def load_base(self) -> dict[str, Any] | None:
        import torch

        if not self.base_path.is_file():
            return None
        try:
            state = torch.load(self.base_path, map_location="cpu", weights_only=True)
        except Exception:  # a foreign or damaged file: warming up again costs only time
            return None
        return state if state.get("fingerprint") == self.fingerprint else None
