"""The training objective as an interface: what a run trains and values its model on.

The trainer, the replay, the checkpoints mode and the audit never call a model directly:
they hand a task `Rows` (model inputs with their conditioning, timesteps, noise) and get
one loss per row back, and the engine values whatever module `task.model` is.
Pixel-space DDPM noise prediction (`royalty.attribution.model.diffusion.PixelDiffusion`)
is one implementation; latent diffusion conditioned on captions (a text-to-image
fine-tune, `royalty.attribution.model.text_to_image`) is another, with the same members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from royalty.attribution.data.folders import ImageTable


@dataclass(frozen=True)
class Inputs:
    """A folder's images as a task's model inputs, each row with its conditioning.

    `x` is what the model denoises (pixels, or a VAE's latents); `cond` what it is
    conditioned on (a caption's text-encoder states), None for an unconditional model.
    Computed once per run; indexing keeps the two aligned row for row.
    """

    x: torch.Tensor  # [N, ...]
    cond: torch.Tensor | None = None  # [N, ...] or None

    def __post_init__(self) -> None:
        if self.cond is not None and self.cond.shape[0] != self.x.shape[0]:
            raise ValueError(f"{self.cond.shape[0]} conditioning rows for {self.x.shape[0]} inputs")

    def __getitem__(self, pos: torch.Tensor | slice) -> "Inputs":
        return Inputs(self.x[pos], None if self.cond is None else self.cond[pos])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one row's `x`: what a noise draw for it must have."""
        return tuple(self.x.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device) -> "Inputs":
        return Inputs(self.x.to(device), None if self.cond is None else self.cond.to(device))

    def repeat_interleave(self, n: int) -> "Inputs":
        """Each row n times in a row (one per draw)."""
        cond = None if self.cond is None else self.cond.repeat_interleave(n, dim=0)
        return Inputs(self.x.repeat_interleave(n, dim=0), cond)

    @staticmethod
    def cat(parts: Sequence["Inputs"]) -> "Inputs":
        conds = [p.cond for p in parts]
        if any(c is None for c in conds) and not all(c is None for c in conds):
            raise ValueError("cannot join conditioned and unconditioned inputs")
        cond = None if conds[0] is None else torch.cat(conds)  # type: ignore[arg-type]
        return Inputs(torch.cat([p.x for p in parts]), cond)


@dataclass(frozen=True)
class Rows:
    """Rows to compute one loss each for: the model inputs and each row's diffusion draw."""

    inputs: Inputs  # [R] rows of what `Task.inputs` made of the images
    timesteps: torch.Tensor  # [R]
    noise: torch.Tensor  # [R, ...] shaped like inputs.x

    def __getitem__(self, pos: torch.Tensor | slice) -> "Rows":
        return Rows(self.inputs[pos], self.timesteps[pos], self.noise[pos])

    def __len__(self) -> int:
        return len(self.inputs)

    @staticmethod
    def cat(parts: Sequence["Rows"]) -> "Rows":
        return Rows(Inputs.cat([p.inputs for p in parts]), torch.cat([p.timesteps for p in parts]), torch.cat([p.noise for p in parts]))


class Task(Protocol):
    """A training objective over one trainable model."""

    @property
    def model(self) -> nn.Module:
        """The module whose trainable parameters are trained and valued."""
        ...

    @property
    def num_train_timesteps(self) -> int:
        """Timesteps a training draw may take: draws are in [0, num_train_timesteps)."""
        ...

    def inputs(self, table: ImageTable) -> Inputs:
        """A loaded folder (images [N, 3, H, W] in [-1, 1], and its metadata) as model
        inputs with their conditioning, on the model's device; once per run and folder."""
        ...

    def losses(self, rows: Rows) -> torch.Tensor:
        """One unreduced loss per row, differentiable in the model's parameters."""
        ...

    def save(self, folder: Path) -> None:
        """The trained model as a diffusers folder (the run's `model/`)."""
        ...
