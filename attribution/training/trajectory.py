"""The training trajectory: warm-up, then the valued steps.

`royalty train` runs it once; `royalty attribute --mode replay` runs it again with other
targets attached. Every random draw comes from (seed, purpose, step) and the engine's
training pass is plain training's backward, so both runs walk the same weights — which
the replay checks against the recorded weights hash before trusting its values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from royalty.attribution.training.config import TrainConfig
from royalty.attribution.model.task import Inputs, Rows, Task
from royalty.attribution.training.distributed import Dist, gather_rows, gather_shards, reduce_gradients, shard_range, shard_rows
from royalty.attribution.training.draws import batch_indices, noise_draws
from royalty.attribution.engine.gradient import TrainPass
from royalty.attribution.engine.hvp import TargetSide
from royalty.attribution.engine.step import Update, ValueEngine
from royalty.attribution.engine.window import CreditWindow
from royalty.attribution.training.applied import StepBatch, applied_step, new_window
from royalty.attribution.training.targets import TargetPlan, TargetRows, column_means
from royalty.errors import TrainingError

ProgressFn = Callable[[int, int, float], None]  # (steps done, total, train loss), warm-up included
StepHook = Callable[[int], None]  # called after step t's update with t + 1


@dataclass
class Tally:
    """The run's values so far: [n_train, n_columns] sums, one log row per step, and (when
    the applied update is credited) the batches still being credited."""

    first: torch.Tensor
    second: torch.Tensor
    log: list[dict[str, float]] = field(default_factory=list)
    window: CreditWindow | None = None

    @classmethod
    def zeros(cls, n_train: int, n_columns: int) -> "Tally":
        z = torch.zeros(n_train, n_columns, dtype=torch.float64)
        return cls(z, z.clone())

    def add(self, idx: torch.Tensor, columns: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> None:
        """Add one step's [B, S] values of batch rows `idx` into their value-target columns."""
        for total, part in ((self.first, first), (self.second, second)):
            block = torch.zeros(len(idx), total.shape[1], dtype=torch.float64)
            total.index_add_(0, idx, block.index_copy(1, columns, part.to(torch.float64)))


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 of every tensor of the state dict, by name: identical weights ⇔ identical hash."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_finite(loss: float, where: str) -> None:
    # A diverged run would otherwise write NaN values that pay no one, or anyone.
    if not np.isfinite(loss):
        raise TrainingError(f"training diverged at {where} (loss {loss}): lower the learning rate; no values were written")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class Parallel:
    """How one step's batch is computed: over processes, micro-batches and precision.

    The step's batch (`--batch-size` × `--gradient-accumulation-steps` rows, the same
    rows and draws on every process) is cut into micro-batches of `--batch-size` rows,
    each split evenly over the processes: process r computes its share of every
    micro-batch. The trivial layout (one process, one micro-batch, float32) runs the
    exact code plain training runs.
    """

    dist: Dist = Dist()
    micro_batches: int = 1
    micro_rows: int = 0  # rows per micro-batch, over all processes
    precision: str = "no"  # "no" | "bf16" (autocast of the training forward)

    @classmethod
    def of(cls, cfg: TrainConfig, dist: Dist = Dist()) -> "Parallel":
        shard_rows(dist, cfg.batch_size)  # refuses a batch that does not split evenly
        return cls(dist, cfg.gradient_accumulation_steps, cfg.batch_size, cfg.mixed_precision)

    @property
    def trivial(self) -> bool:
        return not self.dist.active and self.micro_batches == 1 and self.precision == "no"

    def positions(self) -> list[torch.Tensor]:
        """This process's rows of the step batch, one index tensor per micro-batch."""
        start, stop = shard_rows(self.dist, self.micro_rows)
        return [torch.arange(m * self.micro_rows + start, m * self.micro_rows + stop) for m in range(self.micro_batches)]

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def summed(self, local: torch.Tensor) -> torch.Tensor:
        """Σ over processes of `local`, in rank order: the same bits on every process."""
        if not self.dist.active:
            return local
        return torch.stack(gather_rows(self.dist, local)).sum(0)

    def in_step_order(self, local: torch.Tensor) -> torch.Tensor:
        """Every process's rows of the step batch (`local`: this one's, micro-batches in
        order) gathered into the step batch's row order, on every process."""
        if not self.dist.active:
            return local
        parts = gather_rows(self.dist, local)
        out = torch.empty((self.micro_batches * self.micro_rows, *local.shape[1:]), dtype=local.dtype, device=local.device)
        for rank, part in enumerate(parts):
            rows = torch.cat(Parallel(Dist(rank, self.dist.world), self.micro_batches, self.micro_rows).positions())
            out[rows] = part
        return out

    def target_share(self, rows: TargetRows) -> tuple[TargetRows, Callable[[torch.Tensor], torch.Tensor] | None]:
        """This process's share of the step's targets, and how to gather a per-target tensor
        back into all of them (None: this process evaluates every target).

        Every process evaluates only its share of the targets (their rows' forward and
        backward, and with --order 2 their Hessian-vector products), so the target side
        shards as the training rows do. With fewer targets than processes each process
        evaluates them all: a share could be empty.
        """
        n = len(rows.columns)
        if not self.dist.active or n < self.dist.world:
            return rows, None
        start, stop = shard_range(self.dist, n)
        return rows.shard(start, stop), lambda local: gather_shards(self.dist, local, n)

    def finish_grads(self, optimizer: torch.optim.Optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        reduce_gradients(self.dist, params, self.micro_batches)


def plain_step(task: Task, optimizer, batch: Rows, where: str, passes: TrainPass, par: Parallel = Parallel()) -> float:
    """One step of plain training: the engine's training pass without the values, so a
    valued step's `.grad` equals it bit for bit (attribution/engine/gradient.py)."""
    optimizer.zero_grad(set_to_none=True)
    micro = _micro_losses(task, batch, par)
    _, rows, last = passes.run((micro,) if callable(micro) else micro, keep=False)
    # the step's loss over every process's rows: all processes agree on divergence
    loss = last if par.trivial else float(par.in_step_order(torch.cat(rows).float()).mean())
    check_finite(loss, where)
    if not par.trivial:
        par.finish_grads(optimizer)
    optimizer.step()
    return loss


def train_batch(cfg: TrainConfig, step: int, images: Inputs, num_timesteps: int, phase: str = "train") -> tuple[torch.Tensor, Rows]:
    """(indices, rows) of a step's training batch, derived from the seed."""
    order = "order" if phase == "train" else "warmup-order"
    idx = batch_indices(cfg.seed, step, cfg.step_batch_size, len(images), purpose=order)
    if phase == "train" and cfg.train_max_timestep is not None:
        num_timesteps = min(num_timesteps, cfg.train_max_timestep)
    t, noise = noise_draws(cfg.seed, phase, step, len(idx), images.sample_shape, num_timesteps)
    return idx, Rows(images[idx.to(images.device)], t.to(images.device), noise.to(images.device))


def warm_up(
    cfg: TrainConfig, task: Task, optimizer, images: Inputs, progress: ProgressFn | None, total: int, passes: TrainPass,
    par: Parallel = Parallel(),
) -> None:
    """Plain steps on the pooled training data (`images`: the task's inputs), before any value is taken."""
    set_lr(optimizer, cfg.warmup_lr if cfg.warmup_lr is not None else cfg.lr)
    for w in range(cfg.warmup_steps):
        _, batch = train_batch(cfg, w, images, task.num_train_timesteps, phase="warmup")
        loss = plain_step(task, optimizer, batch, f"warm-up step {w}", passes, par)
        if progress is not None:
            progress(w + 1, total, loss)
    set_lr(optimizer, cfg.lr)


@dataclass(frozen=True)
class Valued:
    """What the valued steps need besides the model: training inputs, targets, training pass, engine, Adam's P_t."""

    images: Inputs  # the training folder as the task's inputs, on the model's device
    plan: TargetPlan
    passes: TrainPass  # the training pass every step runs, valued or not
    engine: ValueEngine | None  # None: plain training (--no-values)
    precondition: Callable | None
    parallel: Parallel = Parallel()

    def __post_init__(self) -> None:
        if self.engine is not None and self.engine.passes is not self.passes:
            raise ValueError("the engine must run the same training pass as the plain steps")


def valued_steps(
    cfg: TrainConfig,
    task: Task,
    optimizer: torch.optim.Optimizer,
    valued: Valued,
    tally: Tally,
    steps: range,
    after_step: StepHook | None = None,
) -> None:
    """The valued phase's `steps`, values added into `tally`."""
    plan, engine, par = valued.plan, valued.engine, valued.parallel
    stop = steps.stop
    # the secant pass's targets at w_{t+1}: with exact draws they are step t+1's targets at its
    # weights, so that step does not evaluate them again (a resumed run evaluates them anew: same bits)
    at_weights = None
    for step in steps:
        idx, batch = train_batch(cfg, step, valued.images, task.num_train_timesteps)
        optimizer.zero_grad(set_to_none=True)
        if engine is None:
            loss = plain_step(task, optimizer, batch, f"step {step}", valued.passes, par)
            tally.log.append(log_row(step, cfg.lr, loss, float("nan"), float("nan"), float("nan"), None))
        else:
            rows = plan.rows(step).to(valued.images.device)
            mine, gather = par.target_share(rows)
            targets = TargetSide(lambda sel: task.losses(mine.select(sel)), mine.slot, len(mine.columns), gather)
            finish = None if par.trivial else lambda: par.finish_grads(optimizer)
            if cfg.applied_credit:
                if tally.window is None:  # the valued phase starts: what momentum it inherits
                    tally.window = new_window(cfg, optimizer, engine.params, plan.n_columns, plan.per_step)
                out = applied_step(cfg, optimizer, engine, tally.window, StepBatch(
                    step, idx, _micro_losses(task, batch, par), targets, rows.columns, rows.scale, step + 1 == stop,
                    finish, par.in_step_order, par.summed, at_weights,
                ))
                at_weights = out.after if plan.estimator == "exact" else None
                train_loss = out.train_loss if par.trivial else float(par.in_step_order(out.row_losses.float()).mean())
                check_finite(train_loss, f"step {step}")
                for credited_rows, columns, first, second in out.credits:
                    if not bool(torch.isfinite(first + second).all()):
                        raise TrainingError(f"non-finite values at step {step}: lower --lr (now {cfg.lr})")
                    tally.add(credited_rows, columns, first, second)
                target_losses, credited, unattributed = out.target_losses, out.credited, out.unattributed
            else:
                sv = engine.step(_micro_losses(task, batch, par), targets, Update(cfg.lr, valued.precondition, rows=len(idx)), finish_grads=finish)
                scale = rows.scale.unsqueeze(0)
                if not par.trivial:  # every process's rows, in the batch's order, everywhere
                    sv = dataclasses.replace(
                        sv,
                        first=par.in_step_order(sv.first),
                        second=par.in_step_order(sv.second),
                        train_loss=float(par.in_step_order(sv.row_losses.float()).mean()),
                    )
                # the tally and the log live on the CPU, whatever the device
                sv = dataclasses.replace(sv, first=sv.first.cpu(), second=sv.second.cpu(), target_losses=sv.target_losses.cpu())
                check_finite(sv.train_loss, f"step {step}")
                if not bool(torch.isfinite(sv.total).all()):
                    raise TrainingError(f"non-finite values at step {step}: lower --lr (now {cfg.lr})")
                optimizer.step()
                tally.add(idx, rows.columns, sv.first * scale, sv.second * scale)
                train_loss, target_losses, credited, unattributed = sv.train_loss, sv.target_losses, sv.total.sum(0), None
            real = rows.columns < plan.n_targets
            before = float(target_losses[real].mean())
            # exact draws are the same rows every step: the loss after step t is the loss
            # before step t+1, measured anyway; other estimators need one more forward
            if plan.estimator == "exact" and tally.log and step > 0:
                tally.log[-1]["target_loss_after"] = before
            last = step + 1 == stop
            after = target_loss_after(task, rows, real) if plan.estimator != "exact" or last else float("nan")
            parts = None
            if unattributed is not None:
                parts = {k: float(getattr(unattributed, k)[real].mean()) for k in UNATTRIBUTED_PARTS}
            elif cfg.optimizer == "sgd" and cfg.weight_decay == 0:
                parts = dict.fromkeys(UNATTRIBUTED_PARTS, 0.0)  # plain SGD applies exactly what it credits
            tally.log.append(log_row(step, cfg.lr, train_loss, before, after, float(credited[real].mean()), parts))
        if after_step is not None:
            after_step(step + 1)


def _micro_losses(task: Task, batch: Rows, par: Parallel):
    """The engine's training loss function(s): the whole batch, or this process's micro-batches."""
    if par.trivial:
        return lambda: task.losses(batch)

    def micro(pos: torch.Tensor):
        def losses() -> torch.Tensor:
            with par.autocast(batch.inputs.device):
                return task.losses(batch[pos])

        return losses

    return [micro(pos) for pos in par.positions()]


@torch.no_grad()
def target_loss_after(task: Task, rows: TargetRows, real: torch.Tensor) -> float:
    """Mean loss of the step's real targets at w_{t+1}, on the same draws."""
    per = column_means(task.losses(rows.select(None)).to(torch.float64), rows)
    return float(per.cpu()[real].mean())


# the parts of a step's change that no valued image is credited with (engine/window.py)
UNATTRIBUTED_PARTS = ("decay", "carried", "beyond")


def log_row(
    step: int, lr: float, train_loss: float, before: float, after: float, value_sum: float, unattributed: dict[str, float] | None
) -> dict[str, float]:
    """A step's row of steps.parquet. `unattributed` None: not computed (own-step AdamW
    credit, --no-values), NaN in the ledger rather than a made-up 0."""
    row = {"step": step, "lr": lr, "train_loss": train_loss, "target_loss_before": before, "target_loss_after": after, "value_sum": value_sum}
    row.update({f"unattributed_{k}": (unattributed or {}).get(k, float("nan")) for k in UNATTRIBUTED_PARTS})
    return row
