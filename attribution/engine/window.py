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
that computed them, until β1^{n_t−n_s} has decayed past `length` steps. Two schemes give
the same credits (tested against each other and the float64 reference):

- direct: at every step, every open batch's rows are dotted with the step's targets —
  length·B·K·D multiply-adds per step;
- accumulated: c_{t,s} = β1^{r−n_s} · a_t with a_t = η_t (1−β1) β1^{n_t−r} / (1−β1^{n_t}), so
  a batch's whole credit is β1^{r−n_s}/B_s ⟨A(close) − A(open), ∇ℓ(w_s, z)⟩ with
  A = Σ_t a_t P_t ∇ℓ_T(w_t) summed over steps: one dot when a batch opens, one when it
  closes, and one per open batch each time the base r moves — (2 + length/rebase)·B·C·D
  per step. The base moves every `rebase` steps so that β1^{r−n_s} stays ≤ 1000 and the
  difference of the two float64 dots loses at most three of its sixteen digits to
  cancellation.

Rows are credited at each step (direct) or when their batch closes (accumulated): a
run's totals are the same, the rows' values only complete when the run ends. Pure tensor
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


def rebase_interval(beta1: float, length: int) -> int:
    """Steps between moves of the accumulated scheme's base: the most with β1^{−rebase} ≤ 1000."""
    if beta1 <= 0.0:
        return 1
    return max(1, min(length, math.floor(math.log(1e-3) / math.log(beta1))))


def accumulates(beta1: float, length: int, columns: int, per_step: int) -> bool:
    """Whether the accumulated scheme does less arithmetic than the direct one.

    Per step, accumulated: (2 + ⌈length/rebase⌉)·B·C·D for C value columns in all; direct:
    length·B·K·D for the K columns a step evaluates. β1 = 0 has nothing to accumulate.
    """
    if beta1 <= 0.0:
        return False
    return (2 + math.ceil(length / rebase_interval(beta1, length))) * columns < length * per_step


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


@dataclass(frozen=True)
class TargetStep:
    """Step t's targets, as the window credits them."""

    grads: torch.Tensor  # [K, D] ∇ℓ_k(w_t)
    # [K, D] H_k Δw_t (order 2: Hessian-vector products, or the secant ∇ℓ_k(w_{t+1}) − ∇ℓ_k(w_t)); None: order 1
    hvps: torch.Tensor | None
    columns: torch.Tensor  # [K] long: each target's value column
    scale: torch.Tensor  # [K] float64: the weight of its values in the run's sums

    @classmethod
    def plain(cls, grads: torch.Tensor, hvps: torch.Tensor | None = None) -> "TargetStep":
        """Targets k = 0..K−1 in columns 0..K−1, weight 1."""
        k = grads.shape[0]
        return cls(grads, hvps, torch.arange(k), torch.ones(k, dtype=torch.float64))


@dataclass
class Slot:
    """One valued step's batch, while its gradient is still in the momentum being applied."""

    step: int
    count: int  # n_s
    rows: torch.Tensor  # [B] the step batch's training-row indices (all processes, in step order)
    rows_total: int  # B_s: the rows the step's mean gradient averaged over (all processes)
    grads: torch.Tensor  # [B_local, D] per-sample gradients ∇ℓ(w_s, z) of this process's rows
    batch_sum: torch.Tensor  # [D] float64: Σ over all of the step's rows of ∇ℓ(w_s, z)
    # the accumulated scheme's bookkeeping ([B_local, C] float64; None: zero)
    base: int = 0  # the base r its dots are against
    start: list = field(default_factory=lambda: [None, None])  # ⟨A(open), g⟩, first and second order
    settled: list = field(default_factory=lambda: [None, None])  # its credit under earlier bases
    row_sum: torch.Tensor | None = None  # [D] float64: Σ of this process's rows' ∇ℓ(w_s, z) (set when opened)

    def part(self, beta1: float, n: int, local: bool = False) -> torch.Tensor:
        """Its term of the first moment at count n: (1 − β1) β1^{n − n_s} g_s, g_s the step's
        mean gradient (`local`: only this process's rows, summed from their per-sample gradients)."""
        total = self.row_sum if local else self.batch_sum
        return total * ((1.0 - beta1) * beta1 ** (n - self.count) / self.rows_total)


@dataclass(frozen=True)
class SlotCredit:
    step: int  # the step whose batch is credited
    rows: torch.Tensor  # that batch's training-row indices
    columns: torch.Tensor  # [S] the value columns of first/second's columns
    first: torch.Tensor  # [B_local, S] float64, target weights applied
    second: torch.Tensor  # [B_local, S] float64


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
    slots: tuple[SlotCredit, ...]  # the rows credited now (direct: every open batch; accumulated: those closing)
    # [K] float64: Σ over this process's rows of what step t's update owes them, first and
    # second order (the rows' own gradients, so that it is what the values add up to)
    credited: torch.Tensor
    unattributed: Unattributed


@dataclass
class CreditWindow:
    """The open batches and the momentum that is nobody's, across the valued steps of a run."""

    beta1: float
    length: int
    carried: torch.Tensor  # [D] float64: m at the start of the valued phase (zeros: none)
    carried_count: int  # n_0: the optimizer's step count then
    columns: int = 0  # C: the run's value columns (the accumulated scheme's sums are [C, D])
    accumulate: bool = False
    slots: list[Slot] = field(default_factory=list)
    beyond: torch.Tensor | None = None  # [D] float64: momentum of batches that left the window, as of beyond_count
    beyond_count: int = 0
    pending: torch.Tensor | None = None  # [D] float64: the open batches' local rows' momentum, as of pending_count
    pending_count: int = 0
    sums: list = field(default_factory=lambda: [None, None])  # A, first and second order: [C, D] float64
    base: int | None = None  # r (None: n_0)
    terms: int = 0  # steps summed into A since the base moved
    rebase: int = 0  # steps between moves of the base (0: rebase_interval's)

    def __post_init__(self) -> None:
        if self.accumulate and self.beta1 <= 0.0:
            raise ValueError("the accumulated scheme needs β1 > 0")
        if self.base is None:
            self.base = self.carried_count
        if self.rebase <= 0:
            self.rebase = rebase_interval(self.beta1, self.length)

    def open(self, slot: Slot) -> None:
        if slot.row_sum is None:
            slot.row_sum = _row_sum(slot.grads)
        if self.accumulate:
            slot.base = self.base
            if self.terms:
                slot.start = [None if a is None else _dots(slot.grads, a) for a in self.sums]
        self.pending = slot.part(self.beta1, slot.count, local=True) + (0.0 if self.pending is None else self._pending_at(slot.count))
        self.pending_count = slot.count
        self.slots.append(slot)

    def credit(self, step: AppliedUpdate, targets: TargetStep, final: bool = False) -> StepCredit:
        """Credit step t's applied update; then close the batches it was the last step of
        (every batch, when `final`: the run ends). Slots must have been opened up to this step."""
        n = step.count
        p = step.precond.to(torch.float64)
        u = targets.grads.to(torch.float64) * p  # P_t ∇ℓ_T: first order
        v = None if targets.hvps is None else 0.5 * targets.hvps.to(torch.float64) * p  # ½ P_t H Δw: second order
        w = targets.scale.to(device=u.device, dtype=torch.float64).unsqueeze(1)
        uw, vw = u * w, None if v is None else v * w
        closing = [final or n - s.count + 1 >= self.length for s in self.slots]
        if self.accumulate:
            self._add(step, (uw, vw), targets.columns)
            slots = tuple(self._paid(s) for s, c in zip(self.slots, closing) if c)
        else:
            slots = tuple(self._direct(step, s, uw, vw, targets.columns) for s in self.slots)
        credited = self._momentum(step, self._pending_at(n), u, v)
        unattributed = Unattributed(
            decay=self._decay(step, targets.grads, targets.hvps),
            carried=self._momentum(step, self.carried * self.beta1 ** (n - self.carried_count), u, v),
            beyond=self._momentum(step, self._beyond_at(n), u, v),
        )
        self._close(n, closing)
        if self.accumulate and not final and n - self.base >= self.rebase:
            self._move_base(n)
        return StepCredit(slots, credited, unattributed)

    # -- the two schemes -------------------------------------------------------------------

    def _direct(self, step: AppliedUpdate, slot: Slot, u: torch.Tensor, v: torch.Tensor | None, columns: torch.Tensor) -> SlotCredit:
        coef = step.lr * (1.0 - self.beta1) * self.beta1 ** (step.count - slot.count) / (1.0 - self.beta1**step.count) / slot.rows_total
        first = _dots(slot.grads, u) * coef
        second = torch.zeros_like(first) if v is None else _dots(slot.grads, v) * coef
        return SlotCredit(slot.step, slot.rows, columns, first, second)

    def _add(self, step: AppliedUpdate, terms: tuple, columns: torch.Tensor) -> None:
        """A += a_t P_t ∇ℓ_T (and its second-order twin), a_t = η (1−β1) β1^{n_t−r} / (1−β1^{n_t})."""
        b1, n = self.beta1, step.count
        a = step.lr * (1.0 - b1) * b1 ** (n - self.base) / (1.0 - b1**n)
        for i, x in enumerate(terms):
            if x is None:
                continue
            if self.sums[i] is None:
                self.sums[i] = torch.zeros(self.columns, x.shape[1], dtype=torch.float64, device=x.device)
            self.sums[i].index_add_(0, columns.to(x.device), x, alpha=a)
        self.terms += 1

    def _settle(self, slot: Slot) -> list[torch.Tensor | None]:
        """A batch's credit so far, first and second order: what earlier bases settled +
        β1^{r−n_s}/B_s (⟨A, g⟩ − ⟨A(open), g⟩); None where nothing is summed (order 1's second)."""
        f = self.beta1 ** (slot.base - slot.count) / slot.rows_total
        out = []
        for i, a in enumerate(self.sums):
            if a is None:
                out.append(None)
                continue
            d = _dots(slot.grads, a)
            if slot.start[i] is not None:
                d = d - slot.start[i]
            d = d * f
            out.append(d if slot.settled[i] is None else slot.settled[i] + d)
        return out

    def _paid(self, slot: Slot) -> SlotCredit:
        """A closing batch's whole credit, in every value column."""
        first, second = self._settle(slot)
        if first is None:  # no step summed yet: nothing credited
            first = torch.zeros(slot.grads.shape[0], self.columns, dtype=torch.float64, device=slot.grads.device)
        return SlotCredit(slot.step, slot.rows, torch.arange(self.columns), first, torch.zeros_like(first) if second is None else second)

    def _move_base(self, n: int) -> None:
        """Settle every open batch against A, then restart A from zero at base n."""
        for slot in self.slots:
            slot.settled = self._settle(slot)
            slot.start, slot.base = [None, None], n
        for a in self.sums:
            if a is not None:
                a.zero_()
        self.base, self.terms = n, 0

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

    def _pending_at(self, n: int) -> torch.Tensor | None:
        if self.pending is None:
            return None
        return self.pending * self.beta1 ** (n - self.pending_count)

    def _close(self, n: int, closing: list[bool]) -> None:
        """Closing batches leave; their momentum moves from `pending` to `beyond`, exactly."""
        self.pending, self.pending_count = self._pending_at(n), n
        for slot, c in zip(self.slots, closing):
            if c:
                part = slot.part(self.beta1, n)
                self.beyond = part if self.beyond is None else self._beyond_at(n) + part
                self.beyond_count = n
                self.pending = self.pending - slot.part(self.beta1, n, local=True)
        self.slots = [s for s, c in zip(self.slots, closing) if not c]

    # -- checkpoints ---------------------------------------------------------------------

    def state(self) -> dict:
        out = {k: getattr(self, k) for k in (
            "beta1", "length", "carried", "carried_count", "columns", "accumulate", "beyond", "beyond_count",
            "pending", "pending_count", "base", "terms", "rebase")}
        out["sums"] = list(self.sums)
        out["slots"] = [{**vars(s), "start": list(s.start), "settled": list(s.settled)} for s in self.slots]
        return out

    @classmethod
    def from_state(cls, state: dict) -> "CreditWindow":
        state = dict(state)
        slots = [Slot(**s) for s in state.pop("slots")]
        for slot in slots:  # a checkpoint written before the row sums were kept
            if slot.row_sum is None:
                slot.row_sum = _row_sum(slot.grads)
        window = cls(**state, slots=slots)
        if "pending" not in state and slots:  # a checkpoint written before `pending` was kept
            window.pending_count = max(s.count for s in slots)
            window.pending = sum(s.part(window.beta1, window.pending_count, local=True) for s in slots)
        return window


_CHUNK = 1 << 14  # columns converted to float64 at a time: a cache-sized block (3.5× faster than all at once, measured)


def _row_sum(grads: torch.Tensor) -> torch.Tensor:
    """[D] float64: Σ of the rows of [B, D], converted a block of columns at a time."""
    return torch.cat([block.to(torch.float64).sum(0) for block in grads.split(_CHUNK, dim=1)])


def _dots(grads: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """[B, D] · [C, D]ᵀ in float64 (the accumulated scheme subtracts two of them), the
    gradients converted a block of columns at a time rather than copied whole."""
    directions = directions.to(torch.float64)
    out = torch.zeros(grads.shape[0], directions.shape[0], dtype=torch.float64, device=grads.device)
    for lo in range(0, grads.shape[1], _CHUNK):
        out += grads[:, lo : lo + _CHUNK].to(torch.float64) @ directions[:, lo : lo + _CHUNK].T
    return out
