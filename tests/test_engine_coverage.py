"""Every trainable parameter is covered by a rule, or the model is refused up front."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch import nn

from engine_cases import layer_case
from royalty.attribution.diffusion import TinyUNetConfig, build_default_unet
from royalty.attribution.engine import EngineConfig, ValueEngine, plan_model
from royalty.attribution.paths import Shapes, choose_path
from royalty.attribution.trainer import freeze
from royalty.errors import UnsupportedModelError, UsageError

SUPPORTED_UNETS = {
    "default": lambda: build_default_unet(32),
    "no_attention": lambda: build_default_unet(16, TinyUNetConfig(attention=False)),
    "three_levels": lambda: build_default_unet(32, TinyUNetConfig(block_out_channels=(32, 32, 64), layers_per_block=2)),
    # the DDPM-style UNet diffusers' unconditional training example builds
    "ddpm_example": lambda: UNet2DModel(
        sample_size=32, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8,
    ),
    "class_conditional": lambda: UNet2DModel(
        sample_size=16, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        num_class_embeds=5,
    ),
}


@pytest.mark.parametrize("name", sorted(SUPPORTED_UNETS))
def test_every_trainable_parameter_of_supported_unets_is_covered(name: str) -> None:
    model = SUPPORTED_UNETS[name]()
    covered = {f"{c.name}.{p}" for c in plan_model(model) for p in c.params}
    assert covered == {n for n, p in model.named_parameters() if p.requires_grad}


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) * self.scale


def test_uncovered_parameters_are_refused_with_their_names() -> None:
    with pytest.raises(UnsupportedModelError) as err:
        plan_model(WithBatchNorm())
    message = str(err.value)
    for name in ("bn.weight", "bn.bias", "scale"):
        assert name in message
    assert "conv.weight" not in message
    assert "Freeze" in message


def test_frozen_parameters_are_allowed_and_listed() -> None:
    model = WithBatchNorm()
    assert sorted(freeze(model, ("bn.*", "scale"))) == ["bn.bias", "bn.weight", "scale"]
    plan_model(model)  # no error now
    with pytest.raises(UsageError, match="matches no parameter"):
        freeze(model, ("nothing.*",))


class WeightUsedOutsideForward(nn.Module):
    """Uses a covered layer's weight through F.linear: the hooks never see that use."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(F.linear(torch.tanh(self.lin(x)), self.lin.weight))


def test_self_check_catches_a_parameter_used_outside_its_module() -> None:
    case = layer_case(nn.Identity(), (4,))
    case.model = WeightUsedOutsideForward().double()
    with torch.no_grad():
        y = case.model(case.train[0])
    case.train = (case.train[0], torch.randn_like(y))
    case.targets = (case.targets[0], torch.randn(case.targets[0].shape[0], 4, dtype=torch.float64))
    engine = ValueEngine(case.model, EngineConfig())
    with pytest.raises(UnsupportedModelError, match="lin.weight"):
        engine.step(case.train_losses, case.target_losses, case.target_index, case.n_targets, 0.1)


def test_ghost_cannot_be_pinned_with_a_preconditioned_target_side() -> None:
    """Adam's diagonal P breaks the rank-one structure ghost needs: an error, not a skip."""
    case = layer_case(nn.Linear(3, 2), (3,))
    engine = ValueEngine(case.model, EngineConfig(paths={"*": "ghost"}))
    ones = {n: torch.ones_like(p) for n, p in case.model.named_parameters()}
    with pytest.raises(UsageError, match="ghost"):
        engine.step(case.train_losses, case.target_losses, case.target_index, case.n_targets, 0.1, lambda g: ones)


def test_unknown_path_and_order_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        EngineConfig(order=3)
    with pytest.raises(UsageError):
        EngineConfig(paths={"*": "fast"})  # type: ignore[dict-item]


def _shapes(**kw) -> Shapes:
    base = dict(n_train=16, train_positions=1, n_target_rows=4, target_positions=1, n_targets=4, groups=1, d=64, p=64, itemsize=4)
    return Shapes(**{**base, **kw})


def test_choose_path_branches() -> None:
    """Each branch of the heuristic, on the shapes that make it the cheapest."""
    assert choose_path(_shapes(), needs_dense_target=False) == "ghost"  # one position: ghost is tiny
    assert choose_path(_shapes(), needs_dense_target=True) == "materialize"  # ghost impossible
    conv = _shapes(train_positions=1024, target_positions=1024, d=32, p=288)
    assert choose_path(conv, needs_dense_target=False) == "materialize"
    assert choose_path(conv, needs_dense_target=False, materialize_limit=1000) == "forward"
