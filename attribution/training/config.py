"""The training run's configuration: everything that decides its values."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from royalty.errors import DataError, UsageError

ESTIMATORS = ("exact", "fresh", "subset", "rotation")
# the estimators that evaluate a share of `--target-subset` targets per step
SHARE_ESTIMATORS = ("subset", "rotation")
MIXED_PRECISION = ("no", "bf16")
# accelerate's --mixed_precision reaches the processes as this variable
ACCELERATE_MIXED_PRECISION = "ACCELERATE_MIXED_PRECISION"
# Options added after runs were first recorded: at these values they are left out of the
# recipe hash, so a run recorded before they existed keeps its recipe and run id.
_LATER_DEFAULTS = {
    "gradient_accumulation_steps": 1, "mixed_precision": "no", "device": "cpu", "train_max_timestep": None,
    "allow_duplicates": False, "caption_column": None, "allow_empty_captions": False,
    "lora_rank": None, "lora_alpha": None, "lora_targets": None,
    # runs recorded before the applied-update credit existed credited each batch at its own step
    "credit": "own-step", "credit_window": None,
    "curvature": "hessian",
}
# How a step's update is credited (docs/design.md §1.6): `applied` splits the update the
# optimizer applies (momentum, bias correction) over the batches whose gradients are in it;
# `own-step` credits each batch's preconditioned gradient at the step that computed it.
# The two agree for plain SGD, which keeps its own-step computation either way.
CREDITS = ("applied", "own-step")
# How --order 2 takes the curvature along the step Δw_t (docs/design.md §1.6): `hessian`, one
# Hessian-vector product H_k Δw_t per target per step (exact); `secant`, the change of the
# targets' gradients across the step, ∇ℓ_k(w_{t+1}) − ∇ℓ_k(w_t) (equal to it up to a term
# of order Δw², at the cost of one more pass over the targets per step, or none with exact draws).
CURVATURES = ("hessian", "secant")
# diffusers' text-to-image LoRA script adapts the attention projections
DEFAULT_LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
# a text-to-image pipeline is fine-tuned through LoRA of this rank unless told otherwise
DEFAULT_TEXT_TO_IMAGE_LORA_RANK = 4
# --device: the CPU, or a CUDA GPU (under a launcher "cuda" is each process's own GPU)
DEVICE_PATTERN = re.compile(r"cpu|cuda(:[0-9]+)?")
REFERENCE_TARGETS_MEAN = "targets-mean"
REFERENCE_NONE = "none"


@dataclass(frozen=True)
class Recipe:
    """What `royalty train` uses for the recipe options a user leaves out: one per kind of model."""

    optimizer: str
    lr: float
    timestep_draws: int
    target_max_timestep: int
    epochs: float | None = None  # None: one epoch (when --steps is not given either)
    order: int = 1
    curvature: str = "hessian"  # at order 2 (order 1 takes no curvature)


# A pixel UNet trained from nothing: plain SGD, whose values are exact first-order Shapley values.
FROM_SCRATCH = Recipe(optimizer="sgd", lr=0.01, timestep_draws=4, target_max_timestep=250)
# A LoRA fine-tune of a captioned text-to-image base: the recipe measured on the shipped base
# (BENCHMARKS.md, owner attribution): AdamW, a few epochs, target draws at t < 500 (in the
# latents, t < 100 carries less of a house's style: 38 % against 48 % over three seeds).
# Order 2 by the secant: first order over-predicts the targets' change by 31–47 % there,
# the secant's ledger closes to 0.2 % within ±3 % of first order's time (BENCHMARKS.md, ledger).
FINE_TUNE = Recipe(optimizer="adamw", lr=1e-3, timestep_draws=2, target_max_timestep=500, epochs=4.0, order=2, curvature="secant")


def recipe_options(recipe: Recipe, credit: str = "applied", **given: Any) -> dict[str, Any]:
    """The recipe's options, overridden by each one the user gave (not None).

    The recipe's length applies only when neither --steps nor --epochs was given, its
    curvature only at order 2 with the applied credit (`credit`: the one the run uses).
    """
    out: dict[str, Any] = {
        "optimizer": recipe.optimizer, "lr": recipe.lr, "timestep_draws": recipe.timestep_draws,
        "target_max_timestep": recipe.target_max_timestep, "order": recipe.order, "curvature": recipe.curvature,
    }
    out.update({k: v for k, v in given.items() if v is not None})
    # the recipe's second order is the secant's, which only the applied credit takes: with
    # own-step credit the recipe is first order; a given secant is still refused there
    if credit != "applied" and given.get("order") is None:
        out["order"] = 1
    if (out["order"] == 1 or credit != "applied") and given.get("curvature") is None:
        out["curvature"] = "hessian"  # first order takes no curvature
    if given.get("steps") is None and given.get("epochs") is None:
        out["epochs"] = recipe.epochs
    return out


def mixed_precision_of(requested: str | None, env: Mapping[str, str] = os.environ) -> str:
    """--mixed-precision, or what `accelerate launch --mixed_precision` asked for.

    accelerate passes its choice in the environment and sets it to "no" when it was not
    given, so "no" there defers to the option; any other value must agree with it.
    """
    launcher = env.get(ACCELERATE_MIXED_PRECISION, "no").lower()
    if launcher == "no":
        return requested or "no"
    if requested is not None and requested != launcher:
        raise UsageError(
            f"--mixed-precision {requested} but accelerate launch --mixed_precision {launcher} "
            f"({ACCELERATE_MIXED_PRECISION}={launcher}): give one, or the same in both"
        )
    if launcher not in MIXED_PRECISION:
        raise UsageError(
            f"accelerate launch --mixed_precision {launcher}: royalty trains in {' or '.join(MIXED_PRECISION)} "
            f"(fp16 needs a loss scaler the values would have to undo); relaunch with --mixed_precision bf16 or no"
        )
    return launcher


def check_device_name(name: str) -> None:
    """The syntax of --device, checked before torch loads (device.py checks the hardware)."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got {name!r}")


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    targets: Path
    out: Path
    model: Path | None = None  # None: the default tiny UNet built from code
    resolution: int = 32
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 16
    lr: float = 0.01
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    order: int = 1
    timestep_draws: int = 4  # M: fixed (timestep, noise) draws per target image
    target_max_timestep: int = 250  # target draws at low noise (docs/design.md §1.8: more faithful)
    # valued steps draw training timesteps below this (None: the scheduler's whole range);
    # the warm-up always uses the whole range
    train_max_timestep: int | None = None
    estimator: str = "exact"  # exact | fresh (one fresh draw per target per step) | subset | rotation
    target_subset: int = 0  # targets per step for estimator=subset or rotation
    reference: str = REFERENCE_TARGETS_MEAN  # a folder, "targets-mean" or "none"
    seed: int = 0
    values: bool = True
    checkpoint_every: int = 0
    warmup_steps: int = 0  # plain steps on the pooled data before the attributed phase
    warmup_lr: float | None = None  # learning rate of the warm-up (default: lr)
    freeze: tuple[str, ...] = ()  # fnmatch patterns of parameter names kept fixed
    # a step's batch is this many micro-batches of batch_size rows (over all processes)
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "bf16": autocast of the training forward; values in float32/64
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N" (attribution/training/device.py resolves it)
    # train on an image its owner listed more than once (two owners are always refused)
    allow_duplicates: bool = False
    # text-to-image pipelines: the metadata column of the captions (None: text, else caption)
    caption_column: str | None = None
    allow_empty_captions: bool = False  # train images with an empty caption unconditioned
    # LoRA adapters (peft): rank 0 trains the whole model; None: 4 for a text-to-image
    # pipeline, 0 for a pixel UNet. alpha None: the rank. targets None: DEFAULT_LORA_TARGETS
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] | None = None
    credit: str = "applied"
    # steps a batch stays credited under momentum (None: until β1^steps ≤ 1e-4, 88 at β1 = 0.9)
    credit_window: int | None = None
    curvature: str = "hessian"

    def __post_init__(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise UsageError("give --steps or --epochs, not both")
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"--steps must be at least 1, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise UsageError(f"--epochs must be positive, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")
        if self.optimizer not in ("sgd", "adamw"):
            raise UsageError(f"--optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.order not in (1, 2):
            raise UsageError(f"--order must be 1 or 2, got {self.order}")
        if self.timestep_draws < 1:
            raise UsageError(f"--timestep-draws must be at least 1, got {self.timestep_draws}")
        if not 1 <= self.target_max_timestep <= 1000:
            raise UsageError(f"--target-max-timestep must be in 1..1000, got {self.target_max_timestep}")
        if self.train_max_timestep is not None and not 1 <= self.train_max_timestep <= 1000:
            raise UsageError(f"--train-max-timestep must be in 1..1000, got {self.train_max_timestep}")
        if self.estimator not in ESTIMATORS:
            raise UsageError(f"--estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        if self.estimator in SHARE_ESTIMATORS and self.target_subset < 1:
            raise UsageError(f"--estimator {self.estimator} needs --target-subset N (targets per step)")
        if self.warmup_lr is not None and not self.warmup_lr > 0:
            raise UsageError(f"--warmup-lr must be positive, got {self.warmup_lr}")
        if self.checkpoint_every < 0 or self.warmup_steps < 0:
            raise UsageError("--checkpoint-every and --warmup-steps cannot be negative")
        if self.gradient_accumulation_steps < 1:
            raise UsageError(f"--gradient-accumulation-steps must be at least 1, got {self.gradient_accumulation_steps}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise UsageError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        check_device_name(self.device)
        if self.lora_rank is not None and self.lora_rank < 0:
            raise UsageError(f"--lora-rank must be 0 (train the whole model) or positive, got {self.lora_rank}")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise UsageError(f"--lora-alpha must be positive, got {self.lora_alpha}")
        if self.credit not in CREDITS:
            raise UsageError(f"--credit must be one of {', '.join(CREDITS)}, got {self.credit!r}")
        if self.credit_window is not None and self.credit_window < 1:
            raise UsageError(f"--credit-window must be at least 1, got {self.credit_window}")
        if self.curvature not in CURVATURES:
            raise UsageError(f"--curvature must be one of {', '.join(CURVATURES)}, got {self.curvature!r}")
        if self.curvature == "secant" and self.order != 2:
            raise UsageError("--curvature secant is how the second-order term is taken: give --order 2 with it")
        if self.curvature == "secant" and self.credit != "applied":
            raise UsageError("--curvature secant credits the applied update: it cannot be used with --credit own-step")
        if self.lora_targets is not None and not self.lora_targets:
            raise UsageError("--lora-targets needs at least one module name")

    @property
    def applied_credit(self) -> bool:
        """Whether the valued steps credit the applied update (window.py) rather than own-step dots.

        Plain SGD (no weight decay) applies exactly each batch's own gradient: its own-step
        values are the applied update's, and keep their own, cheaper computation — unless
        the secant curvature is asked for, which only the applied credit takes.
        """
        return self.credit == "applied" and (self.optimizer == "adamw" or self.weight_decay > 0 or self.curvature == "secant")

    @property
    def step_batch_size(self) -> int:
        """Rows one optimizer step averages over: the union of its micro-batches."""
        return self.batch_size * self.gradient_accumulation_steps

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None:
            return self.steps
        epochs = self.epochs if self.epochs is not None else 1.0
        return max(1, -(-int(round(epochs * n_train)) // self.step_batch_size))

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, doc: dict[str, Any], **changes: Any) -> TrainConfig:
        """The config a run.json recorded (`to_json`), with `changes` applied."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - fields)
        if unknown:
            raise DataError(f"run.json config has unknown keys {', '.join(unknown)}: written by another royalty version?")
        values = dict(doc)
        values.setdefault("credit", _LATER_DEFAULTS["credit"])  # recorded before there was a choice
        for key in ("data", "targets", "out"):
            values[key] = Path(values[key])
        if values.get("model") is not None:
            values["model"] = Path(values["model"])
        values["freeze"] = tuple(values.get("freeze", ()))
        if values.get("lora_targets") is not None:
            values["lora_targets"] = tuple(values["lora_targets"])
        values.update(changes)
        return cls(**values)

    def recipe_hash(self) -> str:
        """What must match for --resume to continue a run: everything but paths of outputs."""
        recipe = {k: v for k, v in self.to_json().items() if k not in ("out",) and _LATER_DEFAULTS.get(k, object()) != v}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
