"""The payout policy (docs/design.md §3), as one immutable value recorded in every statement."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Basis(str, Enum):
    """Which value column pays: the whole contribution, or what is specific to the target."""

    RAW = "raw"
    SPECIFIC = "specific"


class OnNoPositive(str, Enum):
    """What to do when no owner has a positive value for a split."""

    FAIL = "fail"
    EQUAL = "equal"


# Fixed parts of the policy, named in the statement so a reader need not know the code.
CLIP_AT = "0"
ALLOCATION = "largest_remainder"
TIE_BREAK = "owner_ascending"


@dataclass(frozen=True)
class PayoutPolicy:
    basis: Basis = Basis.RAW
    on_no_positive: OnNoPositive = OnNoPositive.FAIL
    # Minor units; an owner allocated less than this is paid 0 now and the amount is
    # carried forward for them — it is never handed to the other owners.
    min_payout: int = 0

    def __post_init__(self) -> None:
        if self.min_payout < 0:
            raise ValueError("min_payout must be non-negative")

    @property
    def per_target(self) -> bool:
        """A --revenue total is split target by target (equal parts), not pooled.

        Specific values are measured against a reference; against the default one (the
        mean over the targets) an owner's sum over all targets is 0 by construction, so
        only the per-target split means something for that basis.
        """
        return self.basis is Basis.SPECIFIC

    def carries_forward(self, amount: int) -> bool:
        return 0 < amount < self.min_payout

    def as_dict(self) -> dict[str, Any]:
        """The policy as it enters the statement id (money rendered by the caller)."""
        return {
            "basis": self.basis.value,
            "clip_at": CLIP_AT,
            "on_no_positive": self.on_no_positive.value,
            "min_payout_minor": self.min_payout,
            "allocation": ALLOCATION,
            "tie_break": TIE_BREAK,
        }
