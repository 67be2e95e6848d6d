"""Credit for the update Adam actually applies (docs/design.md §1.6).

AdamW's step t moves the weights by

    Δw_t = −η λ w_t − η P_t m̂_t,     m̂_t = m_t / (1 − β1^{n_t}),
    m_t  = β1^{n_t − n_0} m_0 + Σ_s (1 − β1) β1^{n_t − n_s} g_s,

with n the optimizer's step count, m_0 the first moment carried into the valued phase and
g_s the mean gradient of valued step s's batch. To first order the targets' loss falls by
−⟨∇ℓ_T, Δw_t⟩; each term of Δw_t is credited to what caused it:

- sample z of batch s: d_z = −η c_{t,s} P_t ∇ℓ(w_s, z) / B_s,  c_{t,s} = (1−β1) β1^{n_t−n_s} / (1−β1^{n_t});
- unattributed: weight decay −η λ w_t; the carried-in momentum; and the momentum of
  batches that have left the window (older than `length` steps), kept exactly as one
  vector so that nothing is lost, only no longer credited to its images.

Second order: the curvature along the actual update, −½ Δw_tᵀ H Δw_t, is split as
Σ_i −½ d_iᵀ H Δw_t over the same terms.

The window holds each open batch's per-sample gradients ∇ℓ(w_s, z), taken at the step
that computed them, until β1^{n_t−n_s} has decayed past `length` steps. Pure tensor
arithmetic over flattened parameter vectors: no model, no optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def window_length(beta1: float, dropped: float = 1e-4) -> int:
    """Steps a batch stays credited until the momentum weight it still has left, β1^L, is ≤ `dropped`."""
    if beta1 <= 0.0:
        return 1
    return max(1, math.ceil(math.log(dropped) / math.log(beta1)))


def applied_weights(beta1: float, first_count: int, steps: int, length: int) -> torch.Tensor:
    """[steps] float64: Σ_t c_{t,s} for each valued step s — how many times over its batch's
    gradient is applied in the run, momentum and bias correction included, within `length`
    steps of s and before the run ends. `first_count`: the optimizer's count at step 0."""
    out = torch.zeros(steps, dtype=torch.float64)
    for s in range(steps):
        for t in range(s, min(steps, s + length)):
            n_t = first_count + t
            out[s] += (1.0 - beta1) * beta1 ** (t - s) / (1.0 - beta1**n_t)
    return out


@dataclass(frozen=True)
class AppliedUpdate:
    """One AdamW step as the optimizer is about to apply it, flattened over the trainable parameters."""

    lr: float
    weight_decay: float
    beta1: float
    count: int  # n_t: the optimizer's step count once this step is taken (torch's state["step"] after it)
    precond: torch.Tensor  # [D] P_t = 1 / (√v̂_t + ε)
    weights: torch.Tensor  # [D] w_t
    update: torch.Tensor  # [D] Δw_t


@dataclass
class Slot:
    """One valued step's batch, while its gradient is still in the momentum being applied."""

    step: int
    count: int  # n_s
    rows: torch.Tensor  # [B] the step batch's training-row indices (all processes, in step order)
    rows_total: int  # B_s: the rows the step's mean gradient averaged over (all processes)
    grads: torch.Tensor  # [B_local, D] per-sample gradients ∇ℓ(w_s, z) of this process's rows
    batch_sum: torch.Tensor  # [D] float64: Σ over all of the step's rows of ∇ℓ(w_s, z)


@dataclass(frozen=True)
class SlotCredit:
    step: int  # the step whose batch is credited
    rows: torch.Tensor  # that batch's training-row indices
    first: torch.Tensor  # [B_local, K] float64
    second: torch.Tensor  # [B_local, K] float64


@dataclass(frozen=True)
class Unattributed:
    """Per target [K] float64, first and second order together: no valued image's doing."""

    decay: torch.Tensor
    carried: torch.Tensor
    beyond: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.decay + self.carried + self.beyond


@dataclass(frozen=True)
class StepCredit:
    slots: tuple[SlotCredit, ...]
    unattributed: Unattributed


@dataclass
class CreditWindow:
    """The open batches and the momentum that is nobody's, across the valued steps of a run."""

    beta1: float
    length: int
    carried: torch.Tensor  # [D] float64: m at the start of the valued phase (zeros: none)
    carried_count: int  # n_0: the optimizer's step count then
    slots: list[Slot] = field(default_factory=list)
    beyond: torch.Tensor | None = None  # [D] float64: momentum of batches that left the window, as of beyond_count
    beyond_count: int = 0

    def open(self, slot: Slot) -> None:
        self.slots.append(slot)

    def credit(self, step: AppliedUpdate, target_grads: torch.Tensor, target_hvps: torch.Tensor | None) -> StepCredit:
        """Credit step t's applied update; then close the batches it was the last step of.

        `target_grads`: [K, D] each target's loss gradient at w_t. `target_hvps`: [K, D]
        H_k Δw_t (order 2), or None (order 1). Slots must have been opened up to this step.
        """
        b1, n = self.beta1, step.count
        bias = 1.0 - b1**n
        p = step.precond.to(torch.float64)
        u = target_grads.to(torch.float64) * p  # P_t ∇ℓ_T: first order
        v = None if target_hvps is None else 0.5 * target_hvps.to(torch.float64) * p  # ½ P_t H Δw: second order
        slots = []
        for slot in self.slots:
            coef = step.lr * (1.0 - b1) * b1 ** (n - slot.count) / bias / slot.rows_total
            grads = slot.grads
            first = (grads @ u.to(grads.dtype).T).to(torch.float64) * coef
            second = torch.zeros_like(first) if v is None else (grads @ v.to(grads.dtype).T).to(torch.float64) * coef
            slots.append(SlotCredit(slot.step, slot.rows, first, second))
        unattributed = Unattributed(
            decay=self._decay(step, target_grads, target_hvps),
            carried=self._momentum(step, self.carried * b1 ** (n - self.carried_count), u, v),
            beyond=self._momentum(step, self._beyond_at(n), u, v),
        )
        self._close(n)
        return StepCredit(tuple(slots), unattributed)

    # -- the parts nobody is credited with -------------------------------------------------

    @staticmethod
    def _decay(step: AppliedUpdate, target_grads: torch.Tensor, target_hvps: torch.Tensor | None) -> torch.Tensor:
        # d = −η λ w_t: first order −⟨∇ℓ_T, d⟩, second −½ dᵀ H Δw
        w = step.weights.to(torch.float64)
        scale = step.lr * step.weight_decay
        out = scale * (target_grads.to(torch.float64) @ w)
        if target_hvps is not None:
            out += 0.5 * scale * (target_hvps.to(torch.float64) @ w)
        return out

    @staticmethod
    def _momentum(step: AppliedUpdate, m: torch.Tensor | None, u: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
        # d = −η P_t m / (1 − β1^n): first order η⟨P ∇ℓ_T, m⟩/(1−β1^n), second η⟨½ P H Δw, m⟩/(1−β1^n)
        if m is None:
            return torch.zeros(u.shape[0], dtype=torch.float64, device=u.device)
        scale = step.lr / (1.0 - step.beta1**step.count)
        out = scale * (u @ m)
        if v is not None:
            out += scale * (v @ m)
        return out

    def _beyond_at(self, n: int) -> torch.Tensor | None:
        if self.beyond is None:
            return None
        return self.beyond * self.beta1 ** (n - self.beyond_count)

    def _close(self, n: int) -> None:
        """Batches credited for `length` steps leave; their momentum joins `beyond`, exactly."""
        keep = []
        for slot in self.slots:
            if n - slot.count + 1 < self.length:
                keep.append(slot)
                continue
            # its part of m_n: (1 − β1) β1^{n − n_s} g_s, with g_s the step's mean gradient
            part = slot.batch_sum * ((1.0 - self.beta1) * self.beta1 ** (n - slot.count) / slot.rows_total)
            self.beyond = part if self.beyond is None else self._beyond_at(n) + part
            self.beyond_count = n
        self.slots = keep

    # -- checkpoints ---------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "beta1": self.beta1, "length": self.length, "carried": self.carried, "carried_count": self.carried_count,
            "slots": [vars(s).copy() for s in self.slots], "beyond": self.beyond, "beyond_count": self.beyond_count,
        }

    @classmethod
    def from_state(cls, state: dict) -> "CreditWindow":
        return cls(
            state["beta1"], state["length"], state["carried"], state["carried_count"],
            [Slot(**s) for s in state["slots"]], state["beyond"], state["beyond_count"],
        )
