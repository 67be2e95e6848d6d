"""Crediting the update AdamW applies (attribution/engine/window.py), in closed form.

A linear training loss ℓ(w, z) = ⟨c_z, w⟩ (each row's gradient is its c_z, at any w)
and quadratic target losses ℓ_k(w) = ½ (w − a_k)ᵀ A_k (w − a_k): torch's AdamW takes the
steps; the test unrolls its momentum by hand, bias correction, carried-in momentum and
weight decay included, and checks the window's credits term by term. On a quadratic
target the second-order expansion is exact, so the ledger's residual must vanish.
"""

from __future__ import annotations

import pytest
import torch

from royalty.attribution.engine.window import AppliedUpdate, CreditWindow, Slot, TargetStep, applied_weights, window_length
from royalty.attribution.training.optim import adamw_step, first_moment

D, K, B, STEPS, WARM = 4, 2, 3, 6, 2
BETA1, BETA2, EPS, LR, WD = 0.9, 0.999, 1e-8, 0.05, 0.1


def _flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return d["w"].reshape(-1)


@pytest.fixture(scope="module")
def problem() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    a = r(K, D)
    q = r(K, D, D)
    return {
        "w0": r(D),
        "c": r(STEPS, B, D),  # per-sample gradients of the valued steps' rows
        "warm": r(WARM, D),  # warm-up batch gradients: the momentum carried in
        "a": a,
        "A": q @ q.transpose(1, 2) + torch.eye(D, dtype=torch.float64),
    }


def target_loss(p: dict, w: torch.Tensor) -> torch.Tensor:
    d = w.unsqueeze(0) - p["a"]
    return 0.5 * torch.einsum("ki,kij,kj->k", d, p["A"], d)


def target_grad(p: dict, w: torch.Tensor) -> torch.Tensor:
    return torch.einsum("kij,kj->ki", p["A"], w.unsqueeze(0) - p["a"])


def run(p: dict, length: int, order: int = 2, accumulate: bool = False, rebase: int = 0):
    w = torch.nn.Parameter(p["w0"].clone())
    opt = torch.optim.AdamW([w], lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=WD, foreach=False)
    for g in p["warm"]:
        w.grad = g.clone()
        opt.step()
    params = {"w": w}
    m0, n0 = first_moment(opt, params)
    window = CreditWindow(BETA1, length, _flat(m0), n0, K, accumulate, rebase=rebase)
    trace = []
    for t in range(STEPS):
        rows = p["c"][t]
        w.grad = rows.mean(0).clone()
        step = adamw_step(opt, params)
        w_t = w.detach().clone()
        window.open(Slot(t, step.count, torch.arange(t * B, (t + 1) * B), B, rows.clone(), rows.sum(0)))
        dw = _flat(step.update)
        applied = AppliedUpdate(LR, WD, BETA1, step.count, _flat(step.precond), w_t, dw)
        hv = torch.einsum("kij,j->ki", p["A"], dw) if order == 2 else None
        credit = window.credit(applied, TargetStep.plain(target_grad(p, w_t), hv), final=t + 1 == STEPS)
        before = target_loss(p, w_t)
        opt.step()
        trace.append({"w": w_t, "dw": dw, "actual_dw": w.detach() - w_t, "credit": credit, "count": step.count,
                      "change": before - target_loss(p, w.detach()), "p": _flat(step.precond)})
    return trace


def test_the_predicted_update_is_the_step_torch_takes(problem) -> None:
    for row in run(problem, length=STEPS):
        torch.testing.assert_close(row["dw"], row["actual_dw"], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("length", [STEPS, 2, 1], ids=["whole-run", "window-2", "window-1"])
def test_credits_are_the_momentum_unrolled_by_hand(problem, length) -> None:
    trace = run(problem, length)
    for t, row in enumerate(trace):
        n_t = row["count"]
        u = target_grad(problem, row["w"]) * row["p"]  # P_t ∇ℓ_k
        v = 0.5 * torch.einsum("kij,j->ki", problem["A"], row["dw"]) * row["p"]  # ½ P_t H_k Δw_t
        credited = {c.step: c for c in row["credit"].slots}
        # the open batches: those at most length − 1 steps old
        assert sorted(credited) == list(range(max(0, t - length + 1), t + 1))
        for s, c in credited.items():
            weight = LR * (1 - BETA1) * BETA1 ** (t - s) / (1 - BETA1**n_t) / B
            torch.testing.assert_close(c.first, weight * problem["c"][s] @ u.T, rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(c.second, weight * problem["c"][s] @ v.T, rtol=1e-12, atol=1e-15)
        # nobody's: the decay, the warm-up's momentum decayed to n_t, the batches beyond the window
        un = row["credit"].unattributed
        decay = LR * WD * (target_grad(problem, row["w"]) @ row["w"] + torch.einsum("kij,j,i->k", 0.5 * problem["A"], row["dw"], row["w"]))
        torch.testing.assert_close(un.decay, decay, rtol=1e-12, atol=1e-15)
        m_warm = sum((1 - BETA1) * BETA1 ** (WARM - 1 - i) * g for i, g in enumerate(problem["warm"]))
        m_carried = BETA1 ** (t + 1) * m_warm
        m_beyond = sum(((1 - BETA1) * BETA1 ** (t - s) * problem["c"][s].mean(0) for s in range(0, t - length + 1)),
                       torch.zeros(D, dtype=torch.float64))
        scale = LR / (1 - BETA1**n_t)
        torch.testing.assert_close(un.carried, scale * ((u + v) @ m_carried), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(un.beyond, scale * ((u + v) @ m_beyond), rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("length", [STEPS, 2], ids=["whole-run", "window-2"])
def test_on_a_quadratic_target_the_ledger_has_no_residual(problem, length) -> None:
    """first + second order of a quadratic is its exact change: every part accounted for."""
    for row in run(problem, length):
        c = row["credit"]
        credited = sum((s.first + s.second).sum(0) for s in c.slots)
        torch.testing.assert_close(c.credited, credited, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(credited + c.unattributed.total, row["change"], rtol=1e-10, atol=1e-14)
        assert float(c.unattributed.decay.abs().min()) > 0 and float(c.unattributed.carried.abs().min()) > 0


def test_order_one_credits_the_first_order_change(problem) -> None:
    for row in run(problem, STEPS, order=1):
        c = row["credit"]
        credited = sum(s.first.sum(0) for s in c.slots)
        torch.testing.assert_close(c.credited, credited, rtol=1e-12, atol=1e-15)
        first_order = -(target_grad(problem, row["w"]) @ row["dw"])  # −⟨∇ℓ_k, Δw_t⟩
        torch.testing.assert_close(credited + c.unattributed.total, first_order, rtol=1e-10, atol=1e-14)
        assert all(float(s.second.abs().max()) == 0 for s in c.slots)


def test_the_window_keeps_a_batch_until_its_weight_is_negligible() -> None:
    assert window_length(0.9) == 88 and 0.9**88 <= 1e-4 < 0.9**87
    assert window_length(0.9, dropped=1e-2) == 44
    assert window_length(0.0) == 1


def test_the_window_survives_a_checkpoint(problem) -> None:
    trace_window = CreditWindow(BETA1, 2, torch.ones(D, dtype=torch.float64), 3)
    trace_window.open(Slot(0, 4, torch.arange(B), B, problem["c"][0].clone(), problem["c"][0].sum(0)))
    again = CreditWindow.from_state(trace_window.state())
    assert again.state().keys() == trace_window.state().keys()
    torch.testing.assert_close(again.slots[0].grads, trace_window.slots[0].grads)
    assert again.length == 2 and again.carried_count == 3


@pytest.mark.parametrize("length", [STEPS, 2])
def test_applied_weights_are_the_window_coefficients_summed(problem, length) -> None:
    """Σ_t c_{t,s}: each batch's credit with a target gradient that never changed."""
    trace = run(problem, length, order=1)
    weights = applied_weights(BETA1, trace[0]["count"], STEPS, length)
    for s in range(STEPS):
        total = sum(LR * (1 - BETA1) * BETA1 ** (t - s) / (1 - BETA1 ** row["count"]) for t, row in enumerate(trace)
                    if s <= t < s + length)
        assert float(weights[s]) * LR == pytest.approx(total, rel=1e-12)
    if length == STEPS:  # early batches are applied more than once (bias correction), the last ones less
        assert float(weights[0]) > 1 > float(weights[-1])


def _totals(trace) -> tuple[torch.Tensor, torch.Tensor]:
    """[STEPS·B, K] first and second order: every row's credit summed over the run."""
    first = torch.zeros(STEPS * B, K, dtype=torch.float64)
    second = torch.zeros_like(first)
    for row in trace:
        for c in row["credit"].slots:
            first[c.rows.unsqueeze(1), c.columns] += c.first
            second[c.rows.unsqueeze(1), c.columns] += c.second
    return first, second


def _unrolled_totals(p, trace, length) -> tuple[torch.Tensor, torch.Tensor]:
    first = torch.zeros(STEPS * B, K, dtype=torch.float64)
    second = torch.zeros_like(first)
    for t, row in enumerate(trace):
        u = target_grad(p, row["w"]) * row["p"]
        v = 0.5 * torch.einsum("kij,j->ki", p["A"], row["dw"]) * row["p"]
        for s in range(max(0, t - length + 1), t + 1):
            weight = LR * (1 - BETA1) * BETA1 ** (t - s) / (1 - BETA1 ** row["count"]) / B
            first[s * B : (s + 1) * B] += weight * p["c"][s] @ u.T
            second[s * B : (s + 1) * B] += weight * p["c"][s] @ v.T
    return first, second


@pytest.mark.parametrize("rebase", [1, 2, 0], ids=["rebase-1", "rebase-2", "rebase-default"])
@pytest.mark.parametrize("length", [STEPS, 2], ids=["whole-run", "window-2"])
def test_the_accumulated_scheme_pays_each_row_its_unrolled_total(problem, length, rebase) -> None:
    trace = run(problem, length, accumulate=True, rebase=rebase)
    first, second = _totals(trace)
    want_first, want_second = _unrolled_totals(problem, trace, length)
    torch.testing.assert_close(first, want_first, rtol=1e-11, atol=1e-15)
    torch.testing.assert_close(second, want_second, rtol=1e-11, atol=1e-15)
    # rows are paid when their batch closes: after `length` steps, or at the run's end
    for t, row in enumerate(trace):
        closed = sorted(c.step for c in row["credit"].slots)
        assert closed == (list(range(max(0, t - length + 1), t + 1)) if t + 1 == STEPS else ([t - length + 1] if t >= length - 1 else []))
    # the ledger does not wait: each step's credited amount is its own
    direct = run(problem, length)
    for a, b in zip(trace, direct):
        torch.testing.assert_close(a["credit"].credited, b["credit"].credited, rtol=1e-12, atol=1e-15)


def test_the_accumulated_scheme_survives_a_checkpoint_mid_run(problem) -> None:
    """Stopping after any step and going on from the saved state gives the same bits."""
    whole = _totals(run(problem, STEPS, accumulate=True, rebase=2))
    w = torch.nn.Parameter(problem["w0"].clone())
    opt = torch.optim.AdamW([w], lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=WD, foreach=False)
    for g in problem["warm"]:
        w.grad = g.clone()
        opt.step()
    m0, n0 = first_moment(opt, {"w": w})
    window = CreditWindow(BETA1, STEPS, _flat(m0), n0, K, True, rebase=2)
    first = torch.zeros(STEPS * B, K, dtype=torch.float64)
    second = torch.zeros_like(first)
    for t in range(STEPS):
        rows = problem["c"][t]
        w.grad = rows.mean(0).clone()
        step = adamw_step(opt, {"w": w})
        w_t = w.detach().clone()
        window.open(Slot(t, step.count, torch.arange(t * B, (t + 1) * B), B, rows.clone(), rows.sum(0)))
        dw = _flat(step.update)
        hv = torch.einsum("kij,j->ki", problem["A"], dw)
        credit = window.credit(AppliedUpdate(LR, WD, BETA1, step.count, _flat(step.precond), w_t, dw),
                               TargetStep.plain(target_grad(problem, w_t), hv), final=t + 1 == STEPS)
        opt.step()
        for c in credit.slots:
            first[c.rows.unsqueeze(1), c.columns] += c.first
            second[c.rows.unsqueeze(1), c.columns] += c.second
        window = CreditWindow.from_state(window.state())
    assert torch.equal(first, whole[0]) and torch.equal(second, whole[1])


def test_the_cheaper_scheme_is_chosen() -> None:
    from royalty.attribution.engine.window import accumulates, rebase_interval

    assert rebase_interval(0.9, 88) == 65 and 0.9**65 >= 1e-3 > 0.9**66
    assert rebase_interval(0.9, 5) == 5
    assert accumulates(0.9, 88, columns=24, per_step=24)  # (2 + 2)·24 < 88·24
    assert not accumulates(0.9, 2, columns=24, per_step=24)  # a short window: direct is cheaper
    assert not accumulates(0.9, 88, columns=1000, per_step=8)  # a subset of many targets per step
    assert not accumulates(0.0, 88, columns=24, per_step=24)  # SGD with decay: nothing carries over
    with pytest.raises(ValueError, match="β1 > 0"):
        CreditWindow(0.0, 1, torch.zeros(D, dtype=torch.float64), 0, K, accumulate=True)


@pytest.mark.parametrize("rebase", [1, 3])
def test_both_schemes_agree_when_each_step_evaluates_other_columns(rebase) -> None:
    """A subset estimator: each step a different 2 of 5 columns, weighted 5/2; the
    accumulated scheme's [C, D] sums must pay each row what the direct scheme pays step by step."""
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    C, steps, length = 5, 9, 4
    windows = [CreditWindow(BETA1, length, r(D), 2, C, acc, rebase=rebase) for acc in (False, True)]
    totals = [torch.zeros(steps * B, C, dtype=torch.float64) for _ in windows]
    for t in range(steps):
        grads = r(B, D)
        columns = torch.randperm(C, generator=g)[:2].sort().values
        targets = TargetStep(r(2, D), r(2, D), columns, torch.full((2,), C / 2, dtype=torch.float64))
        update = AppliedUpdate(LR, WD, BETA1, 3 + t, r(D).abs(), r(D), r(D))
        for window, total in zip(windows, totals):
            window.open(Slot(t, 3 + t, torch.arange(t * B, (t + 1) * B), B, grads.clone(), grads.sum(0)))
            for c in window.credit(update, targets, final=t + 1 == steps).slots:
                total[c.rows.unsqueeze(1), c.columns] += c.first + c.second
    assert float(totals[0].abs().max()) > 0
    torch.testing.assert_close(totals[1], totals[0], rtol=1e-11, atol=1e-14 * float(totals[0].abs().max()))


def test_a_checkpoint_written_before_the_row_sums_were_kept_resumes(problem) -> None:
    """A window state with only the fields of the first applied-credit checkpoints (no
    pending momentum, no row sums, no scheme) resumes to the same credits."""
    def fresh() -> CreditWindow:
        window = CreditWindow(BETA1, 3, torch.ones(D, dtype=torch.float64), 3)
        for t in range(2):
            window.open(Slot(t, 4 + t, torch.arange(t * B, (t + 1) * B), B, problem["c"][t].clone(), problem["c"][t].sum(0)))
        return window

    old_keys = ("beta1", "length", "carried", "carried_count", "beyond", "beyond_count")
    old_slot = ("step", "count", "rows", "rows_total", "grads", "batch_sum")
    state = fresh().state()
    old = {k: state[k] for k in old_keys} | {"slots": [{k: s[k] for k in old_slot} for s in state["slots"]]}
    resumed, whole = CreditWindow.from_state(old), fresh()
    step = AppliedUpdate(LR, WD, BETA1, 5, torch.ones(D, dtype=torch.float64), problem["w0"], problem["w0"])
    targets = TargetStep.plain(target_grad(problem, problem["w0"]))
    got, want = resumed.credit(step, targets), whole.credit(step, targets)
    torch.testing.assert_close(got.credited, want.credited, rtol=1e-14, atol=0)
    for a, b in zip(got.slots, want.slots, strict=True):
        assert torch.equal(a.first, b.first)
