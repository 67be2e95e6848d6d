"""The efficiency check of docs/design.md §1.4 on a real tiny UNet with plain SGD.

Σ over the batch of a step's values predicts the drop of the target loss over that
step; first order up to O(η²), second order up to O(η³).
"""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from royalty.attribution.model.diffusion import build_default_unet, default_scheduler, noise_prediction_losses
from royalty.attribution.training.draws import batch_indices, noise_draws
from royalty.attribution.engine.hvp import TargetSide
from royalty.attribution.engine.step import EngineConfig, Update, ValueEngine


@pytest.fixture(scope="module")
def trace() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    res, n_train, n_targets, draws, lr, steps = 8, 16, 2, 2, 0.01, 60
    unet = build_default_unet(res, seed=0).double()
    sched = default_scheduler()
    g = torch.Generator().manual_seed(0)
    images = torch.rand((n_train, 3, res, res), generator=g, dtype=torch.float64) * 2 - 1
    target_images = torch.rand((n_targets, 3, res, res), generator=g, dtype=torch.float64).repeat_interleave(draws, 0) * 2 - 1
    tt, tn = noise_draws(0, "targets", 0, n_targets * draws, (3, res, res), 250)
    tn = tn.double()
    index = torch.arange(n_targets).repeat_interleave(draws)
    engine = ValueEngine(unet, EngineConfig(order=2))
    opt = torch.optim.SGD(unet.parameters(), lr=lr)

    def target_loss() -> torch.Tensor:
        rows = noise_prediction_losses(unet, sched, target_images, tt, tn)
        return torch.zeros(n_targets, dtype=rows.dtype).index_add(0, index, rows) / draws

    first, second, actual = [], [], []
    for step in range(steps):
        idx = batch_indices(0, step, 4, n_train)
        t, noise = noise_draws(0, "train", step, 4, (3, res, res), 1000)
        opt.zero_grad()
        sv = engine.step(
            lambda: noise_prediction_losses(unet, sched, images[idx], t, noise.double()),
            TargetSide(
                lambda rows: noise_prediction_losses(unet, sched, *(u if rows is None else u[rows] for u in (target_images, tt, tn))),
                index, n_targets,
            ),
            Update(lr),
        )
        before = sv.target_losses
        opt.step()
        with torch.no_grad():
            after = target_loss()
        first.append(sv.first.sum(0))
        second.append((sv.first + sv.second).sum(0))
        actual.append(before - after)
    return {"first": torch.stack(first).flatten(), "second": torch.stack(second).flatten(), "actual": torch.stack(actual).flatten()}


def test_first_order_tracks_target_loss_change(trace) -> None:
    rho = spearmanr(trace["first"].numpy(), trace["actual"].numpy()).statistic
    assert len(trace["actual"]) >= 100
    assert rho >= 0.97, f"Spearman {rho:.3f}"


def test_second_order_tracks_it_more_closely(trace) -> None:
    err1 = (trace["first"] - trace["actual"]).abs().mean()
    err2 = (trace["second"] - trace["actual"]).abs().mean()
    assert err2 < err1, f"first-order error {err1:.3e}, second-order {err2:.3e}"
