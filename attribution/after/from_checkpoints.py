"""`royalty attribute --mode checkpoints`: fast approximate values from saved checkpoints.

The run saved its weights every k valued steps (`--checkpoint-every k`, step 0
included). Step t's value is taken at the nearest earlier checkpoint c ≤ t instead of
at w_t: with the weights fixed over a window [c, c+k), the window's k batches become one
engine call — the targets' forward and backward run once per window instead of once per
step — and no warm-up is re-run. First order only, with the targets' exact fixed draws;
for AdamW, P is taken from the checkpoint's optimizer state. A run that credits the applied
update (--credit applied) has each row's value scaled by how much of its batch's gradient
the optimizer applied over the run (`applied_weights`: momentum, bias correction), as if
the targets' gradient had stayed at the checkpoint's. `benchmarks/attribute.py` measures
how far this lands from `--mode replay`.
"""

from __future__ import annotations

import torch

from royalty.atomic import sha256_file
from royalty.attribution.training import checkpoint
from royalty.attribution.data.folders import ImageTable
from royalty.attribution.model.task import Rows
from royalty.attribution.engine.hvp import TargetSide
from royalty.attribution.engine.step import EngineConfig, Update, ValueEngine
from royalty.attribution.engine.window import applied_weights
from royalty.attribution.training.applied import new_window
from royalty.attribution.training.optim import optimization
from royalty.attribution.after.recorded import Recorded
from royalty.attribution.after.replay import Attributed, target_plan
from royalty.attribution.training.device import module_device, use_cpu_threads
from royalty.attribution.training.trainer import initial_model
from royalty.attribution.training.trajectory import ProgressFn, Tally, train_batch
from royalty.errors import DataError, UsageError

MAX_ROWS = 256  # training rows per engine call: bounds memory on long windows


def recorded_windows(recorded: Recorded) -> list[tuple[int, int]]:
    """[(start, stop)) of each checkpoint's window, verified against run.json's hashes."""
    listed = recorded.manifest.get("checkpoints") or {}
    steps = checkpoint.list_steps(recorded.run_dir)
    if 0 not in steps:
        raise UsageError(
            f"{recorded.run_dir} has no checkpoint of the valued phase's start: train with "
            "--checkpoint-every K to use --mode checkpoints, or use --mode replay"
        )
    for step in steps:
        path = checkpoint.checkpoint_path(recorded.run_dir, step)
        if listed.get(path.name) != sha256_file(path):
            raise DataError(f"{path} does not match its manifest: the run folder was modified after training")
    total = int(recorded.manifest["total_steps"])
    bounds = [s for s in steps if s < total] + [total]
    return list(zip(bounds[:-1], bounds[1:]))


def from_checkpoints(
    recorded: Recorded, targets: ImageTable, progress: ProgressFn | None = None, max_rows: int = MAX_ROWS
) -> Attributed:
    cfg = recorded.config
    windows = recorded_windows(recorded)
    use_cpu_threads(recorded.manifest.get("cpu_threads"))
    task, _ = initial_model(cfg)
    unet = task.model
    unet.train()
    opt = optimization(cfg, unet)
    optimizer, precondition = opt.optimizer, opt.precondition
    engine = ValueEngine(unet, EngineConfig(order=1))
    plan = target_plan(task, targets, cfg, "exact", 0)
    device = module_device(unet)
    rows = plan.rows(0).to(device)
    images = task.inputs(recorded.train)
    tally = Tally.zeros(len(recorded.train), plan.n_columns)
    total = windows[-1][1]
    weights = torch.ones(total, dtype=torch.float64)
    for start, stop in windows:
        state = checkpoint.load(checkpoint.checkpoint_path(recorded.run_dir, start))
        unet.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if start == 0 and cfg.applied_credit:
            # the window the run started its valued phase with: its β1, length and step count
            # (SGD with decay: β1 = 0, each batch applied once, weight 1)
            window = new_window(cfg, optimizer, engine.params)
            weights = applied_weights(window.beta1, window.carried_count + 1, total, window.length)
        batches = [train_batch(cfg, s, images, task.num_train_timesteps) for s in range(start, stop)]
        idx = torch.cat([i for i, _ in batches])
        step_of = torch.cat([torch.full((len(i),), s) for s, (i, _) in zip(range(start, stop), batches)])
        batch = Rows.cat([b for _, b in batches])
        for lo in range(0, len(idx), max_rows):
            part = slice(lo, lo + max_rows)
            optimizer.zero_grad(set_to_none=True)
            sv = engine.step(
                lambda: task.losses(batch[part]),  # noqa: B023
                TargetSide(lambda sel: task.losses(rows.select(sel)), rows.slot, len(rows.columns)),
                # each row's step had lr / (rows in its step): this call's rows are several steps'
                Update(cfg.lr, precondition, rows=cfg.step_batch_size),
            )
            if not bool(torch.isfinite(sv.first).all()):
                raise DataError(f"non-finite values from the checkpoint at step {start}")
            first = sv.first.cpu() * weights[step_of[part]].unsqueeze(1)
            tally.add(idx[part], rows.columns, first, torch.zeros_like(first))
        if progress is not None:
            progress(stop, total, float("nan"))
    return Attributed(tally.first, tally.second, [], None)

