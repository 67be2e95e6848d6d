"""Small models and batches for the engine tests: one per layer rule and configuration.

Cases are built on the CPU (the same numbers everywhere) and moved to DEVICE: the CPU,
or `ROYALTY_TEST_DEVICE=cuda` on a GPU machine, which runs the engine's exactness tests
there with the kernels `royalty train --device cuda` uses.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import UNet2DModel
from torch import nn

from royalty.attribution.training.device import resolve_device, use_device
from royalty.attribution.model.diffusion import TinyUNetConfig, build_default_unet, default_scheduler, noise_prediction_losses

DEVICE = resolve_device(os.environ.get("ROYALTY_TEST_DEVICE", "cpu"))
use_device(DEVICE)


@dataclass
class Case:
    """A model with a training batch and target rows; losses are one per row."""

    model: nn.Module
    train: tuple[torch.Tensor, ...]
    targets: tuple[torch.Tensor, ...]
    target_index: torch.Tensor
    n_targets: int
    loss: Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]

    def rows(self, batch: tuple[torch.Tensor, ...], sel) -> tuple[torch.Tensor, ...]:
        return tuple(t[sel] for t in batch)

    def train_losses(self) -> torch.Tensor:
        return self.loss(self.model, self.train)

    def target_losses(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        return self.loss(self.model, self.targets if rows is None else self.rows(self.targets, rows))

    def ref_train_loss(self, model: nn.Module, i: int) -> torch.Tensor:
        return self.loss(model, self.rows(self.train, slice(i, i + 1))).sum()

    def ref_target_loss(self, model: nn.Module, k: int) -> torch.Tensor:
        return self.loss(model, self.rows(self.targets, self.target_index == k)).mean()

    @property
    def n_train(self) -> int:
        return self.train[0].shape[0]


def _mse(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x, y = batch
    out = model(x)
    return ((out - y) ** 2).reshape(out.shape[0], -1).mean(dim=1)


class Head(nn.Module):
    """Wraps one layer under test with a nonlinearity so curvature is non-trivial."""

    def __init__(self, layer: nn.Module, pre: nn.Module | None = None) -> None:
        super().__init__()
        self.pre = pre if pre is not None else nn.Identity()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():  # integer inputs are embedding indices: feed them as they are
            x = torch.tanh(self.pre(x))
        return torch.tanh(self.layer(x))


def _index(n_targets: int, draws: int) -> torch.Tensor:
    return torch.arange(n_targets).repeat_interleave(draws)


def layer_case(
    layer: nn.Module,
    in_shape: tuple[int, ...],
    n_train: int = 3,
    n_targets: int = 2,
    draws: int = 2,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    pre: nn.Module | None = None,
    integer_input: int | None = None,
) -> Case:
    """`layer` fed with random inputs of `in_shape` (per row); loss = MSE to random outputs."""
    g = torch.Generator().manual_seed(seed)
    model = Head(layer, pre).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.5)
    rows = n_train + n_targets * draws
    if integer_input is not None:
        x = torch.randint(0, integer_input, (rows, *in_shape), generator=g)
    else:
        x = torch.randn((rows, *in_shape), generator=g, dtype=dtype)
    with torch.no_grad():
        y = torch.randn(model(x).shape, generator=g, dtype=dtype)
    tr = (x[:n_train], y[:n_train])
    tg = (x[n_train:], y[n_train:])
    return _on_device(Case(model, tr, tg, _index(n_targets, draws), n_targets, _mse))


def diffusers_unet(
    resolution: int, block_out_channels: tuple[int, ...] = (32, 64), attention: bool = True, seed: int = 0, **kw
) -> UNet2DModel:
    """A UNet2DModel with diffusers' own defaults but for the levels and block types.

    Notably norm_num_groups=32 (one channel per group at 32 channels: GroupNorm removes a
    preceding bias, whose gradient is then exactly zero), layers_per_block=2 and
    attention_head_dim=8. `attention`: attention blocks at every level but the first, as
    diffusers' default block types have.
    """
    n = len(block_out_channels)
    down = ("DownBlock2D",) + ("AttnDownBlock2D" if attention else "DownBlock2D",) * (n - 1)
    up = ("AttnUpBlock2D" if attention else "UpBlock2D",) * (n - 1) + ("UpBlock2D",)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(sample_size=resolution, block_out_channels=block_out_channels, down_block_types=down, up_block_types=up, **kw)


def unet_case(
    config: TinyUNetConfig = TinyUNetConfig(),
    resolution: int = 8,
    n_train: int = 3,
    n_targets: int = 2,
    draws: int = 2,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    model: nn.Module | None = None,
) -> Case:
    """Noise-prediction losses of the tiny default UNet (`config`), or of `model` (built for `resolution`)."""
    model = (model if model is not None else build_default_unet(resolution, config, seed=seed)).to(dtype)
    sched = default_scheduler()
    g = torch.Generator().manual_seed(seed)
    rows = n_train + n_targets * draws
    x0 = torch.randn((rows, 3, resolution, resolution), generator=g, dtype=dtype).clamp(-1, 1)
    noise = torch.randn(x0.shape, generator=g, dtype=dtype)
    t = torch.randint(0, 1000, (rows,), generator=g)

    def loss(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return noise_prediction_losses(m, sched, *batch)

    tr = (x0[:n_train], t[:n_train], noise[:n_train])
    tg = (x0[n_train:], t[n_train:], noise[n_train:])
    return _on_device(Case(model, tr, tg, _index(n_targets, draws), n_targets, loss))


def _on_device(case: Case) -> Case:
    return dataclasses.replace(
        case,
        model=case.model.to(DEVICE),
        train=tuple(t.to(DEVICE) for t in case.train),
        targets=tuple(t.to(DEVICE) for t in case.targets),
        target_index=case.target_index.to(DEVICE),
    )


def lora_unet_case(
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0"),
    zero_b: bool = False,
    prediction_type: str = "epsilon",
    n_train: int = 3,
    n_targets: int = 2,
    draws: int = 2,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> Case:
    """A tiny text-to-image UNet (UNet2DConditionModel) with peft LoRA adapters on
    `targets`, under the text-to-image task's own loss (latents, caption states, the
    scheduler's prediction type). `zero_b`: lora_B = 0, as at the first step of a fine-tune."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig

    from royalty.attribution.model.task import Inputs, Rows
    from royalty.attribution.model.text_to_image import Pipeline, TextToImage

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
            norm_num_groups=4, cross_attention_dim=8, attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        )
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=2, lora_alpha=3, init_lora_weights="gaussian", target_modules=list(targets)))
        if not zero_b:
            with torch.no_grad():
                for name, p in unet.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.3)
    unet = unet.to(dtype)
    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    pipeline = Pipeline(unet, None, None, None, sched)  # type: ignore[arg-type]  # losses need only the scheduler
    g = torch.Generator().manual_seed(seed)
    rows = n_train + n_targets * draws
    lat = torch.randn((rows, 4, 8, 8), generator=g, dtype=dtype)
    cond = torch.randn((rows, 5, 8), generator=g, dtype=dtype)
    noise = torch.randn(lat.shape, generator=g, dtype=dtype)
    t = torch.randint(0, 1000, (rows,), generator=g)

    def loss(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, c, tt, n = batch
        return TextToImage(m, pipeline, seed).losses(Rows(Inputs(x, c), tt, n))  # type: ignore[arg-type]

    tr = (lat[:n_train], cond[:n_train], t[:n_train], noise[:n_train])
    tg = (lat[n_train:], cond[n_train:], t[n_train:], noise[n_train:])
    return _on_device(Case(unet, tr, tg, _index(n_targets, draws), n_targets, loss))
