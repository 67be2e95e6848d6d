"""Every trainable parameter is covered by a rule, or the model is refused up front."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch import nn

from engine_cases import Case, diffusers_unet, layer_case, unet_case
from royalty.attribution.model.diffusion import TinyUNetConfig, build_default_unet
from royalty.attribution.engine.hvp import TargetSide
from royalty.attribution.engine.step import EngineConfig, Update, ValueEngine, plan_model
from royalty.attribution.engine.paths import Shapes, choose_path
from royalty.attribution.training.trainer import freeze
from royalty.cli.errors import EXIT_DATAERR, exit_code_for
from royalty.errors import DataError, UnsupportedModelError, UsageError

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
    with pytest.raises(UsageError, match="nothing is left to train"):
        freeze(WithBatchNorm(), ("conv.*", "bn.*", "scale"))


def test_a_refused_model_is_bad_input_data() -> None:
    """Exit 65 (the model is bad input), not 2: the command line was right."""
    error = UnsupportedModelError("no rule")
    assert isinstance(error, DataError) and not isinstance(error, UsageError)
    assert exit_code_for(error) == EXIT_DATAERR == 65


class WeightUsedOutsideForward(nn.Module):
    """Uses a covered layer's weight through F.linear: the hooks never see that use."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(F.linear(torch.tanh(self.lin(x)), self.lin.weight))


def _with_model(model: nn.Module, in_shape: tuple[int, ...], dtype: torch.dtype) -> Case:
    """A layer case's inputs fed to `model`, with random regression outputs of its shape."""
    case = layer_case(nn.Identity(), in_shape, dtype=dtype)
    case.model = model.to(dtype)
    with torch.no_grad():
        y = case.model(case.train[0])
        y_target = case.model(case.targets[0])
    case.train = (case.train[0], torch.randn_like(y))
    case.targets = (case.targets[0], torch.randn_like(y_target))
    return case


def _step(case: Case) -> None:
    engine = ValueEngine(case.model, EngineConfig())
    case.model.zero_grad(set_to_none=True)
    engine.step(case.train_losses, TargetSide(case.target_losses, case.target_index, case.n_targets), Update(0.1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_self_check_catches_a_parameter_used_outside_its_module(dtype) -> None:
    case = _with_model(WeightUsedOutsideForward(), (4,), dtype)
    with pytest.raises(UnsupportedModelError, match="lin.weight.*outside its module's forward"):
        _step(case)


class FrozenBatchNorm(nn.Module):
    """BatchNorm with no trainable parameter (so no rule is missing): in training mode
    it normalises each sample by the batch's statistics, mixing the samples."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4, affine=False)
        self.out = nn.Conv2d(4, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.bn(self.conv(x))))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_self_check_catches_a_layer_mixing_samples(dtype) -> None:
    """The per-sample gradients still add up to the batch's (the hooks see the whole
    batch's output gradients): only one row against its own loss's gradient shows it."""
    case = _with_model(FrozenBatchNorm().train(), (3, 7, 7), dtype)
    with pytest.raises(UnsupportedModelError, match="conv.weight.*mixing the samples.*BatchNorm"):
        _step(case)


def test_batchnorm_in_eval_mode_mixes_nothing_and_passes() -> None:
    case = _with_model(FrozenBatchNorm().eval(), (3, 7, 7), torch.float32)
    _step(case)


# diffusers' own defaults (norm_num_groups=32, layers_per_block=2, attention_head_dim=8)
# with the levels made small: at 32 channels every GroupNorm has one channel per group and
# removes the bias before it, whose gradient is then exactly zero (issue 21)
DIFFUSERS_DEFAULTS = {
    "32-64": dict(block_out_channels=(32, 64), attention=False),
    "32-64_attention": dict(block_out_channels=(32, 64), attention=True),
    "32-64_attention_one_layer": dict(block_out_channels=(32, 64), attention=True, layers_per_block=1),
    "32-32-64_attention": dict(block_out_channels=(32, 32, 64), attention=True, layers_per_block=1),
    "64-64": dict(block_out_channels=(64, 64), attention=False, layers_per_block=1),
}


@pytest.mark.parametrize("name", sorted(DIFFUSERS_DEFAULTS))
def test_diffusers_default_unets_pass_the_self_check(name: str) -> None:
    model = diffusers_unet(16, **DIFFUSERS_DEFAULTS[name])
    assert model.config.norm_num_groups == 32
    covered = {f"{c.name}.{p}" for c in plan_model(model) for p in c.params}
    assert covered == {n for n, p in model.named_parameters() if p.requires_grad}
    case = unet_case(resolution=16, n_train=3, n_targets=2, draws=1, dtype=torch.float32, model=model)
    engine = ValueEngine(case.model, EngineConfig())
    case.model.zero_grad(set_to_none=True)
    got = engine.step(case.train_losses, TargetSide(case.target_losses, case.target_index, case.n_targets), Update(0.1))
    assert torch.isfinite(got.first).all() and got.first.abs().sum() > 0
    if model.config.block_out_channels[0] == 32:
        # the case the check used to refuse: a parameter whose whole gradient is rounding noise
        bias = case.model.get_parameter("down_blocks.0.resnets.0.conv1.bias")
        weight = case.model.get_parameter("down_blocks.0.resnets.0.conv1.weight")
        assert bias.grad.abs().max() < 1e-4 * weight.grad.abs().max()


def test_ghost_cannot_be_pinned_with_a_preconditioned_target_side() -> None:
    """Adam's diagonal P breaks the rank-one structure ghost needs: an error, not a skip."""
    case = layer_case(nn.Linear(3, 2), (3,))
    engine = ValueEngine(case.model, EngineConfig(paths={"*": "ghost"}))
    ones = {n: torch.ones_like(p) for n, p in case.model.named_parameters()}
    with pytest.raises(UsageError, match="ghost"):
        engine.step(case.train_losses, TargetSide(case.target_losses, case.target_index, case.n_targets), Update(0.1, lambda g: ones))


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
    # built by the training pass: the gradients exist, so no memory limit sends it to forward,
    # and materialize no longer pays for building them
    assert choose_path(dataclasses.replace(conv, train_built=True), needs_dense_target=False, materialize_limit=1000) == "materialize"
    between = _shapes(train_positions=4, target_positions=4, n_target_rows=2, d=8, p=8)
    assert choose_path(between, needs_dense_target=False) == "ghost"
    assert choose_path(dataclasses.replace(between, train_built=True), needs_dense_target=False) == "materialize"


@pytest.mark.parametrize("value", [{"materialize_limit": -1}, {"built_limit": -1}])
def test_negative_limits_are_usage_errors(value) -> None:
    with pytest.raises(UsageError):
        EngineConfig(**value)
