"""Every path of every rule against one backward per sample, float64 and float32."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from engine_cases import Case, diffusers_unet, layer_case, unet_case
from engine_reference import reference_values
from royalty.attribution.model.diffusion import TinyUNetConfig
from royalty.attribution.engine.hvp import TargetSide
from royalty.attribution.engine.step import EngineConfig, Update, ValueEngine
from royalty.attribution.training.optim import adamw_preconditioner
from royalty.errors import UsageError

LR = 0.05
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / (scale if scale > 0 else 1.0)


def fixed_precond(case: Case, seed: int = 1) -> dict[str, torch.Tensor]:
    """A positive diagonal like Adam's, but arbitrary so every element matters."""
    g = torch.Generator().manual_seed(seed)
    return {
        n: torch.rand(p.shape, generator=g, dtype=torch.float64).to(device=p.device, dtype=p.dtype) + 0.5
        for n, p in case.model.named_parameters()
    }


def run_engine(case: Case, path: str | None, order: int, precond: dict[str, torch.Tensor] | None, **config):
    engine = ValueEngine(case.model, EngineConfig(order=order, paths={"*": path} if path else {}, **config))
    case.model.zero_grad(set_to_none=True)
    return engine.step(
        case.train_losses,
        TargetSide(case.target_losses, case.target_index, case.n_targets),
        Update(LR, (lambda grads: precond) if precond is not None else None),
    )


def reference(case: Case, order: int, precond: dict[str, torch.Tensor] | None):
    """float64 reference on a float64 copy of the same weights and inputs."""
    ref = copy.deepcopy(case)
    ref.model = ref.model.to(torch.float64)
    ref.train = tuple(t.to(torch.float64) if t.is_floating_point() else t for t in ref.train)
    ref.targets = tuple(t.to(torch.float64) if t.is_floating_point() else t for t in ref.targets)
    p = None
    if precond is not None:
        p = torch.cat([precond[n].to(torch.float64).reshape(-1) for n, q in ref.model.named_parameters() if q.requires_grad])
    return reference_values(
        ref.model, ref.ref_train_loss, ref.n_train, ref.ref_target_loss, ref.n_targets, LR, precond=p, order=order
    )


_REFERENCES: dict[tuple, tuple[int, torch.Tensor, torch.Tensor]] = {}


def cached_reference(key: tuple | None, case: Case, order: int, precond: dict[str, torch.Tensor] | None):
    """`reference`, computed once per case: the tests of one case's paths (ghost,
    materialize, forward, the automatic choice) and HVP methods all compare against the
    same float64 numbers. `key` names how the case was built (the builders are
    deterministic); None: not cached. A stored order-2 reference holds order 1's too."""
    if key is None:
        return reference(case, order, precond)
    key = (*key, precond is not None)
    stored = _REFERENCES.get(key)
    if stored is None or stored[0] < order:
        stored = _REFERENCES[key] = (order, *reference(case, order, precond))
    _, first, second = stored
    return first.clone(), (second.clone() if order == 2 else torch.zeros_like(first))


def check(
    case: Case, path: str | None, order: int, preconditioned: bool, dtype: torch.dtype, ref_key: tuple | None = None,
    **config,
) -> None:
    precond = fixed_precond(case) if preconditioned else None
    got = run_engine(case, path, order, precond, **config)
    want_first, want_second = cached_reference(ref_key, case, order, precond)
    assert got.first.shape == (case.n_train, case.n_targets)
    assert rel_err(got.first, want_first) <= TOL[dtype], "first order"
    if order == 2:
        assert want_second.abs().max() > 0
        assert rel_err(got.second, want_second) <= TOL[dtype], "second order"
    else:
        assert torch.count_nonzero(got.second) == 0
    if path is not None:
        # the pin reached every factored parameter; dense ones (biases, norms) always materialize
        assert set(got.paths.values()) <= {path, "materialize"}


# (path, order, preconditioned): ghost needs a rank-one target side, so never with P; with
# order 2 it takes the first-order term and the curvature term is materialized
COMBOS = [
    ("ghost", 1, False),
    ("ghost", 2, False),
    ("materialize", 1, False),
    ("forward", 1, False),
    ("materialize", 1, True),
    ("forward", 1, True),
    ("materialize", 2, False),
    ("forward", 2, False),
    ("materialize", 2, True),
    ("forward", 2, True),
]

LAYERS = {
    "linear": lambda bias: (nn.Linear(5, 4, bias=bias), (5,)),
    "linear_tokens": lambda bias: (nn.Linear(5, 3, bias=bias), (7, 5)),
    "linear_4d": lambda bias: (nn.Linear(4, 3, bias=bias), (2, 3, 4)),
    "conv": lambda bias: (nn.Conv2d(3, 4, 3, padding=1, bias=bias), (3, 6, 6)),
    "conv_stride_dilation": lambda bias: (nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(2, 1), bias=bias), (2, 7, 5)),
    "conv_groups": lambda bias: (nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=bias), (4, 5, 5)),
    "conv_depthwise": lambda bias: (nn.Conv2d(3, 3, 3, groups=3, bias=bias), (3, 5, 6)),
    "conv_same_even": lambda bias: (nn.Conv2d(2, 3, 4, padding="same", bias=bias), (2, 5, 5)),
    "conv_valid": lambda bias: (nn.Conv2d(2, 3, 2, padding="valid", bias=bias), (2, 4, 5)),
    "conv_reflect": lambda bias: (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", bias=bias), (2, 5, 5)),
    "conv_circular": lambda bias: (nn.Conv2d(2, 3, 3, padding=2, stride=2, padding_mode="circular", bias=bias), (2, 6, 5)),
    "conv_1x1": lambda bias: (nn.Conv2d(3, 2, 1, bias=bias), (3, 4, 4)),
    "groupnorm": lambda bias: (nn.GroupNorm(2, 4, affine=True), (4, 3, 3)),
    "layernorm": lambda bias: (nn.LayerNorm(5, bias=bias), (3, 5)),
    "layernorm_2d": lambda bias: (nn.LayerNorm((3, 4), bias=bias), (3, 4)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_targets", [1, 2, 3])
@pytest.mark.parametrize("path,order,preconditioned", COMBOS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_rules(layer: str, bias: bool, path: str, order: int, preconditioned: bool, n_targets: int, dtype) -> None:
    torch.manual_seed(0)
    module, shape = LAYERS[layer](bias)
    case = layer_case(module, shape, n_targets=n_targets, dtype=dtype, seed=n_targets)
    check(case, path, order, preconditioned, dtype, ref_key=("layer", layer, bias, n_targets, dtype))


@pytest.mark.parametrize("path,order,preconditioned", [c for c in COMBOS if c[0] != "forward" or c[1] == 1])
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_rule(padding_idx, path: str, order: int, preconditioned: bool) -> None:
    emb = nn.Embedding(6, 4, padding_idx=padding_idx)
    case = layer_case(emb, (5,), integer_input=6, n_targets=3, pre=None)
    check(case, path, order, preconditioned, torch.float64, ref_key=("embedding", padding_idx))


UNET_CONFIGS = {
    "default": TinyUNetConfig(),
    "no_attention": TinyUNetConfig(attention=False),
    "three_levels": TinyUNetConfig(block_out_channels=(16, 16, 32), layers_per_block=1, norm_num_groups=4, attention_head_dim=4),
}


@pytest.mark.parametrize("n_targets", [1, 2, 3])
@pytest.mark.parametrize("path,order,preconditioned", COMBOS + [(None, 1, False), (None, 2, True)])
@pytest.mark.parametrize("config", sorted(UNET_CONFIGS))
def test_unet_float64(config: str, path, order: int, preconditioned: bool, n_targets: int) -> None:
    case = unet_case(UNET_CONFIGS[config], n_targets=n_targets, draws=1 + n_targets % 2)
    check(case, path, order, preconditioned, torch.float64, ref_key=("unet", config, n_targets))


@pytest.mark.parametrize("built_limit", [0, 30_000], ids=["none-built", "some-built"])
@pytest.mark.parametrize("path,order,preconditioned", [(None, 1, False), ("ghost", 1, False), ("forward", 2, True), ("materialize", 2, False)])
def test_unet_values_whatever_the_training_pass_built(path, order: int, preconditioned: bool, built_limit: int) -> None:
    """The other tests run with every layer's per-sample gradients built by the training
    pass (engine/gradient.py); here none, or only the first layers within a small budget."""
    case = unet_case(n_targets=2, draws=1)
    check(case, path, order, preconditioned, torch.float64, ref_key=("unet", "default-built", 2), built_limit=built_limit)


@pytest.mark.parametrize("path,order", [("ghost", 1), ("materialize", 1), ("forward", 1), ("materialize", 2)])
def test_unet_float32(path: str, order: int) -> None:
    case = unet_case(n_targets=3, draws=2, dtype=torch.float32)
    check(case, path, order, False, torch.float32, ref_key=("unet-f32",))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("attention", [False, True], ids=["plain", "attention"])
def test_diffusers_default_unet(attention: bool, dtype) -> None:
    """diffusers' default UNet2DModel (norm_num_groups=32: one channel per group, so some
    biases have a gradient of exactly zero) at 16 px: the self-check passes, the values
    are the reference's (issue 21: it was refused)."""
    model = diffusers_unet(16, (32, 64), attention=attention)
    case = unet_case(resolution=16, n_train=2, n_targets=2, draws=1, dtype=dtype, model=model)
    check(case, None, 1, False, dtype)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    c_in=st.integers(1, 4),
    c_out_per_group=st.integers(1, 3),
    groups=st.integers(1, 3),
    kh=st.integers(1, 3),
    kw=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    h=st.integers(4, 7),
    w=st.integers(4, 7),
    bias=st.booleans(),
    n_train=st.integers(1, 4),
    n_targets=st.integers(1, 3),
    draws=st.integers(1, 2),
    path=st.sampled_from(["ghost", "materialize", "forward"]),
)
def test_conv_shapes_property(c_in, c_out_per_group, groups, kh, kw, stride, padding, dilation, h, w, bias, n_train, n_targets, draws, path) -> None:
    if (kh - 1) * dilation + 1 > h + 2 * padding or (kw - 1) * dilation + 1 > w + 2 * padding:
        return  # no output position
    conv = nn.Conv2d(c_in * groups, c_out_per_group * groups, (kh, kw), stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
    case = layer_case(conv, (c_in * groups, h, w), n_train=n_train, n_targets=n_targets, draws=draws)
    check(case, path, 1, False, torch.float64)


@settings(max_examples=25, deadline=None)
@given(
    n_in=st.integers(1, 6),
    n_out=st.integers(1, 6),
    tokens=st.lists(st.integers(1, 4), min_size=0, max_size=2),
    bias=st.booleans(),
    n_train=st.integers(1, 4),
    n_targets=st.integers(1, 3),
    draws=st.integers(1, 3),
    path=st.sampled_from(["ghost", "materialize", "forward"]),
    order=st.sampled_from([1, 2]),
)
def test_linear_shapes_property(n_in, n_out, tokens, bias, n_train, n_targets, draws, path, order) -> None:
    case = layer_case(nn.Linear(n_in, n_out, bias=bias), (*tokens, n_in), n_train=n_train, n_targets=n_targets, draws=draws)
    check(case, path, order, False, torch.float64)


# Targets with different numbers of rows, listed out of order: the batched products
# group targets by row count and must put each result back in its target's place.
UNEVEN_INDEX = [2, 0, 1, 2, 1, 2]


@pytest.mark.parametrize("layout", ["even", "uneven"])
@pytest.mark.parametrize("hvp,chunk_rows", [("batched", 64), ("batched", 1), ("loop", 64)])
@pytest.mark.parametrize("preconditioned", [False, True], ids=["sgd", "adam"])
def test_second_order_hvp_methods_match_the_reference(hvp: str, chunk_rows: int, layout: str, preconditioned: bool) -> None:
    case = unet_case(n_targets=3, draws=2)
    if layout == "uneven":
        case.target_index = torch.tensor(UNEVEN_INDEX, device=case.target_index.device)
    check(case, None, 2, preconditioned, torch.float64, ref_key=("hvp", layout), hvp=hvp, hvp_chunk_rows=chunk_rows)


@pytest.mark.parametrize("hvp", ["batched", "loop"])
def test_second_order_hvp_methods_on_an_embedding(hvp: str) -> None:
    case = layer_case(nn.Embedding(6, 4, padding_idx=2), (5,), integer_input=6, n_targets=3, pre=None)
    case.target_index = torch.tensor(UNEVEN_INDEX, device=case.target_index.device)
    check(case, "materialize", 2, False, torch.float64, hvp=hvp, hvp_chunk_rows=2)


@pytest.mark.parametrize("bad", [{"hvp": "vmap"}, {"hvp_chunk_rows": 0}])
def test_engine_config_refuses_unknown_hvp_settings(bad) -> None:
    with pytest.raises(UsageError, match="hvp"):
        EngineConfig(order=2, **bad)


def test_adamw_preconditioner_matches_optimizer_state() -> None:
    """P_t is built from the v̂ the coming AdamW step uses."""
    case = layer_case(nn.Linear(4, 3), (4,))
    params = dict(case.model.named_parameters())
    opt = torch.optim.AdamW(params.values(), lr=0.01, foreach=False)
    precond = adamw_preconditioner(opt, params)
    for _ in range(3):
        opt.zero_grad()
        case.train_losses().mean().backward()
        p = precond({n: q.grad for n, q in params.items()})
        opt.step()
        for n, q in params.items():
            st_ = opt.state[q]
            step = float(st_["step"])
            v_hat = st_["exp_avg_sq"] / (1 - 0.999**step)
            torch.testing.assert_close(p[n], 1 / (v_hat.sqrt() + 1e-8), rtol=1e-12, atol=0)


@pytest.mark.parametrize("why", ["preconditioned", "shared over processes"])
def test_ghost_pinned_where_the_target_side_is_not_rank_one_is_refused(why) -> None:
    case = layer_case(nn.Linear(4, 3), (4,))
    engine = ValueEngine(case.model, EngineConfig(paths={"*": "ghost"}))
    precondition = (lambda grads: fixed_precond(case)) if why == "preconditioned" else None
    gather = (lambda local: local) if why != "preconditioned" else None
    with pytest.raises(UsageError, match=f"path 'ghost' cannot be used for layer.weight: .*{why.split()[0]}"):
        engine.step(case.train_losses, TargetSide(case.target_losses, case.target_index, case.n_targets, gather), Update(LR, precondition))


@pytest.mark.parametrize("order", [1, 2])
def test_targets_shared_over_processes_take_the_dense_paths_and_stay_exact(order) -> None:
    """One process's view of a sharded target side: sums gathered (here, from itself), no ghost."""
    case = unet_case(n_targets=3, draws=2)
    engine = ValueEngine(case.model, EngineConfig(order=order))
    gathered: list[tuple[int, ...]] = []

    def gather(local: torch.Tensor) -> torch.Tensor:
        gathered.append(tuple(local.shape))
        return local

    case.model.zero_grad(set_to_none=True)
    got = engine.step(case.train_losses, TargetSide(case.target_losses, case.target_index, case.n_targets, gather), Update(LR))
    want_first, want_second = cached_reference(("hvp", "even"), case, order, None)  # that test's case
    assert "ghost" not in got.paths.values()
    assert rel_err(got.first, want_first) <= TOL[torch.float64]
    if order == 2:
        assert rel_err(got.second, want_second) <= TOL[torch.float64]
    # the target losses, then each parameter's sums (and with order 2 its HVPs) went through the gather
    n_params = sum(1 for p in case.model.parameters() if p.requires_grad)
    assert len(gathered) == 1 + n_params * order
    assert all(shape[0] == case.n_targets for shape in gathered)
