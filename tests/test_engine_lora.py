"""Values on a text-to-image UNet's LoRA adapters against the per-sample float64 reference.

peft's adapters are plain `nn.Linear` (attention projections) and `nn.Conv2d` (a
convolution's lora_A keeps its kernel, lora_B is 1×1) modules, so the Linear and Conv2d
rules cover them; these cases check that nothing about the wrapping (scaling, dropout
identity, the frozen base beside them, cross-attention over caption states) escapes the
hooks: every path, both orders, with and without Adam's P, lora_B = 0 (a fine-tune's
first step, where every lora_A gradient is exactly 0) and random, epsilon and
v-prediction.
"""

from __future__ import annotations

import pytest
import torch

from engine_cases import lora_unet_case
from test_engine_exact import COMBOS, check

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
CONV = ("conv1", "conv2")


@pytest.mark.parametrize("path,order,preconditioned", COMBOS + [(None, 1, False), (None, 2, True)])
@pytest.mark.parametrize("targets", [ATTENTION, CONV], ids=["attention", "conv"])
def test_lora_adapters_match_the_reference(targets, path, order: int, preconditioned: bool) -> None:
    case = lora_unet_case(targets)
    check(case, path, order, preconditioned, torch.float64, ref_key=("lora", targets))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("zero_b", [True, False], ids=["B=0", "B random"])
def test_first_step_and_prediction_types(zero_b: bool, prediction_type: str) -> None:
    case = lora_unet_case(zero_b=zero_b, prediction_type=prediction_type, n_targets=3, draws=1)
    trainable = dict((n, p) for n, p in case.model.named_parameters() if p.requires_grad)
    assert trainable and all("lora_" in n for n in trainable)
    check(case, None, 2, True, torch.float64, ref_key=("lora-first", zero_b, prediction_type))


def test_float32_lora() -> None:
    case = lora_unet_case(dtype=torch.float32, n_targets=3)
    check(case, None, 1, False, torch.float32)
