"""The training objective as an interface: what a run trains and values its model on.

The trainer, the replay, the checkpoints mode and the audit never call a model directly:
they hand a task `Rows` (model inputs, timesteps, noise) and get one loss per row back,
and the engine values whatever module `task.model` is. Pixel-space DDPM noise prediction
(`royalty.attribution.model.diffusion.PixelDiffusion`) is one implementation; another
objective — latents and captions for a text-to-image fine-tune — is another class with
the same four members, and nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class Rows:
    """Rows to compute one loss each for: the model inputs and each row's diffusion draw."""

    inputs: torch.Tensor  # [R, ...] what `Task.inputs` made of the images
    timesteps: torch.Tensor  # [R]
    noise: torch.Tensor  # [R, ...] shaped like inputs

    def __getitem__(self, pos: torch.Tensor | slice) -> "Rows":
        return Rows(self.inputs[pos], self.timesteps[pos], self.noise[pos])

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


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

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A folder's images ([N, 3, H, W] in [-1, 1]) as model inputs, on the device they are on; once per run."""
        ...

    def losses(self, rows: Rows) -> torch.Tensor:
        """One unreduced loss per row, differentiable in the model's parameters."""
        ...

    def save(self, folder: Path) -> None:
        """The trained model as a diffusers folder (the run's `model/`)."""
        ...
