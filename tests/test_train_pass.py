"""The training pass: `.grad` as the sum of the per-sample gradients (engine/gradient.py).

Against autograd's own `backward()` (float64 and float32), with the per-sample gradients
built and reduced straight from the factors; and the valued step's `.grad` bit-identical
to the plain pass's for every path, order, precondition and micro-batching.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from engine_cases import Case, layer_case, lora_unet_case, unet_case
from royalty.attribution.engine.gradient import TrainPass
from royalty.attribution.engine.hvp import TargetSide
from royalty.attribution.engine.rules import Built
from royalty.attribution.engine.step import EngineConfig, Update, ValueEngine

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}

LAYERS = {
    "linear_tokens": lambda: (nn.Linear(5, 3), (7, 5)),
    "conv": lambda: (nn.Conv2d(3, 4, 3, padding=1), (3, 6, 6)),
    "conv_stride_dilation": lambda: (nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(2, 1)), (2, 7, 5)),
    "conv_groups": lambda: (nn.Conv2d(4, 6, 3, padding=1, groups=2), (4, 5, 5)),
    "conv_reflect": lambda: (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 5, 5)),
    "groupnorm": lambda: (nn.GroupNorm(2, 4), (4, 3, 3)),
    "layernorm": lambda: (nn.LayerNorm(5), (3, 5)),
}

BUILT = {"built": {}, "from-factors": {"built_limit": 0}, "some-built": {"built_limit": 2000}}


def autograd_grads(case: Case, micro: int = 1) -> dict[str, torch.Tensor]:
    """Plain PyTorch on a copy: backward() of each micro-batch's mean loss."""
    model = copy.deepcopy(case.model)
    for rows in torch.arange(case.n_train).chunk(micro):
        case.loss(model, tuple(t[rows] for t in case.train)).mean().backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def micro_fns(case: Case, micro: int):
    return [lambda rows=rows: case.loss(case.model, tuple(t[rows] for t in case.train)) for rows in torch.arange(case.n_train).chunk(micro)]


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / (scale if scale > 0 else 1.0)


def pass_grads(case: Case, micro: int, keep: bool = True, **config) -> tuple[dict[str, torch.Tensor], TrainPass]:
    passes = TrainPass(case.model, EngineConfig(**config))
    case.model.zero_grad(set_to_none=True)
    trains, _, _ = passes.run(micro_fns(case, micro), keep=keep)
    assert len(trains) == micro and all(bool(t) == keep for t in trains)
    return {n: p.grad.clone() for n, p in passes.params.items()}, passes


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "plain"])
@pytest.mark.parametrize("micro", [1, 2])
@pytest.mark.parametrize("built", sorted(BUILT))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_grad_is_autograds_gradient(layer: str, dtype, built: str, micro: int, keep: bool) -> None:
    torch.manual_seed(0)
    module, shape = LAYERS[layer]()
    case = layer_case(module, shape, n_train=4, dtype=dtype)
    got, _ = pass_grads(case, micro, keep, **BUILT[built])
    want = autograd_grads(case, micro)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype
        assert rel_err(got[name], want[name]) <= TOL[dtype], name


@pytest.mark.parametrize("built", sorted(BUILT))
@pytest.mark.parametrize("case_name", ["unet", "lora"])
def test_grad_of_a_unet_is_autograds_gradient(case_name: str, built: str) -> None:
    case = unet_case(n_train=4) if case_name == "unet" else lora_unet_case(n_train=4)
    got, passes = pass_grads(case, 1, False, **BUILT[built])
    want = autograd_grads(case)
    for name in want:
        assert rel_err(got[name], want[name]) <= TOL[torch.float64], name


def test_the_built_budget_is_spent_in_parameter_order() -> None:
    case = unet_case(n_train=4)
    passes = TrainPass(case.model, EngineConfig(built_limit=30_000))
    trains, _, _ = passes.run([case.train_losses])
    built = [n for n, rep in trains[0].items() if isinstance(rep, Built)]
    sizes = {n: rep.g.numel() * rep.g.element_size() for n, rep in trains[0].items() if isinstance(rep, Built)}
    assert built and len(built) < sum(1 for r in trains[0].values() if hasattr(r, "dims"))
    assert sum(sizes.values()) <= 30_000
    assert all(isinstance(trains[0][n], Built) for n in built)
    everything = TrainPass(case.model, EngineConfig(built_limit=0)).run([case.train_losses])[0][0]
    assert not any(isinstance(r, Built) for r in everything.values())


# (path pin, order, preconditioned): every way the values can read the training side
COMBOS = [
    ("ghost", 1, False), ("materialize", 1, False), ("forward", 1, False), (None, 1, False),
    ("materialize", 1, True), ("forward", 2, True), ("ghost", 2, False), (None, 2, True),
]


# micro-batches accumulate `.grad` before any path reads it: two combos are enough for them
WITH_MICRO = [(*combo, micro) for combo in COMBOS for micro in (1, 2) if micro == 1 or combo in (COMBOS[0], COMBOS[-1])]


@pytest.mark.parametrize("built", ["built", "from-factors"])
@pytest.mark.parametrize("path,order,preconditioned,micro", WITH_MICRO)
def test_a_valued_steps_grad_is_the_plain_pass_bit_for_bit(path, order: int, preconditioned: bool, micro: int, built: str) -> None:
    case = unet_case(n_train=4, dtype=torch.float32)
    plain, _ = pass_grads(case, micro, False, **BUILT[built])  # as plain_step runs it
    precond = {n: torch.full_like(p, 0.5) for n, p in case.model.named_parameters()} if preconditioned else None
    engine = ValueEngine(case.model, EngineConfig(order=order, paths={"*": path} if path else {}, **BUILT[built]))
    case.model.zero_grad(set_to_none=True)
    engine.step(
        micro_fns(case, micro), TargetSide(case.target_losses, case.target_index, case.n_targets),
        Update(0.05, (lambda grads: precond) if precond is not None else None),
    )
    for name, g in plain.items():
        assert torch.equal(engine.params[name].grad, g), name
