"""nn.Conv2d with any stride, padding (incl. 'same' and non-zero modes), dilation, groups.

After `unfold`, a convolution is a linear map per output position: a_p is the
C_in/groups·kh·kw patch feeding position p, b_p the output gradient there. Unfolding
is slow and large on a CPU, so only the ghost path builds the patches; the other two
paths (and the summed gradient) use convolutions that compute the same sums, with the
layer's zero padding passed to the kernel rather than copied into the input:

- per-sample weight gradients: torch's own weight-gradient convolution, with the
  samples folded into the channels as groups (one call for the whole batch);
- the forward trick: the layer's convolution run with each target gradient as weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from royalty.attribution.engine.rules.base import Dense, Factored, PerSample, register


def _explicit_padding(module: nn.Conv2d) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding equivalent to the module's `padding`."""
    kh, kw = module.kernel_size
    dh, dw = module.dilation
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return (0, 0, 0, 0)
        # 'same' (stride 1): total d·(k−1), the extra pixel on the right/bottom, as torch does
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    ph, pw = module.padding
    return (pw, pw, ph, ph)


@dataclass(frozen=True)
class ConvFactored(Factored):
    """A convolution call: its input and output gradient.

    `pad` is symmetric zero padding still to apply (the kernels take it as an argument,
    so the common case never copies the input); other padding is already in `x`.
    """

    x: torch.Tensor  # [N, C_in, H, W]
    gy: torch.Tensor  # [N, C_out, Ho, Wo]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    shape: torch.Size
    pad: tuple[int, int] = (0, 0)

    @property
    def n(self) -> int:
        return self.gy.shape[0]

    @property
    def dims(self) -> tuple[int, int, int, int]:
        g = self.groups
        n, c_out, ho, wo = self.gy.shape
        return g, ho * wo, c_out // g, self.x.shape[1] // g * self.kernel[0] * self.kernel[1]

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        n, c_out = self.gy.shape[:2]
        g = self.groups
        cols = F.unfold(self.x, self.kernel, dilation=self.dilation, padding=self.pad, stride=self.stride)  # [N, C_in·k·k, P]
        a = cols.reshape(n, g, -1, cols.shape[-1]).transpose(2, 3)
        b = self.gy.reshape(n, g, c_out // g, -1).transpose(2, 3)
        return a, b

    def _weight_grad(self, gy: torch.Tensor, x: torch.Tensor, groups: int) -> torch.Tensor:
        c_out, c_in = gy.shape[1], x.shape[1]
        _, dw, _ = torch.ops.aten.convolution_backward(
            gy, x, torch.empty((c_out, c_in // groups, *self.kernel), dtype=x.dtype, device=x.device), None,
            self.stride, self.pad, self.dilation, False, (0, 0), groups, (False, True, False),
        )
        return dw

    def materialize(self) -> torch.Tensor:
        # Per-sample weight gradients in one call: fold the samples into the channels
        # and let torch's weight-gradient convolution treat each sample as a group.
        n, c_in, h, w = self.x.shape
        c_out, ho, wo = self.gy.shape[1:]
        g = self.groups
        dw = self._weight_grad(self.gy.reshape(1, n * c_out, ho, wo), self.x.reshape(1, n * c_in, h, w), n * g)
        return dw.reshape(n, g, c_out // g, -1)

    def summed(self) -> torch.Tensor:
        # the layer's own weight-gradient convolution: what autograd computes for it
        g = self.groups
        return self._weight_grad(self.gy, self.x, g).reshape(g, self.shape[0] // g, -1)

    def forward_dots(self, targets: torch.Tensor) -> torch.Tensor:
        # Σ_p b_pᵀ U a_p is the layer's convolution with weight U, dotted with gy:
        # all K targets in one grouped convolution, group g holding every target's part.
        k = targets.shape[0]
        g = self.groups
        n, c_out, ho, wo = self.gy.shape
        cg_out = c_out // g
        kh, kw = self.kernel
        weight = targets.reshape(k, g, cg_out, -1, kh, kw).transpose(0, 1).reshape(g * k * cg_out, -1, kh, kw)
        y = F.conv2d(self.x, weight, stride=self.stride, padding=self.pad, dilation=self.dilation, groups=g)
        y = y.reshape(n, g, k, cg_out, ho * wo)
        return torch.einsum("ngkop,ngop->nk", y, self.gy.reshape(n, g, cg_out, ho * wo))


def conv_input(module: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """(input, symmetric zero padding left to the kernels): a padded copy only where needed."""
    left, right, top, bottom = _explicit_padding(module)
    if module.padding_mode == "zeros" and left == right and top == bottom:
        return x, (top, left)
    return padded_input(module, x), (0, 0)


def padded_input(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    pad = _explicit_padding(module)
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    return F.pad(x, pad, mode=mode) if any(pad) else x


def conv2d_magnitude(module: nn.Conv2d, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    gy = grad_out.abs()
    if "weight" in names:
        # the weight-gradient convolution of |x| and |gy|: Σ over samples and positions of |b|·|a|
        zeros = (0, 0)
        _, dw, _ = torch.ops.aten.convolution_backward(
            gy, padded_input(module, x).abs(), torch.empty_like(module.weight, dtype=gy.dtype), None,
            module.stride, zeros, module.dilation, False, zeros, module.groups, (False, True, False),
        )
        out["weight"] = dw
    if "bias" in names:
        out["bias"] = gy.sum(dim=(0, 2, 3))
    return out


@register(nn.Conv2d, ("weight", "bias"), conv2d_magnitude)
def conv2d(module: nn.Conv2d, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]) -> dict[str, PerSample]:
    if x.dim() != 4:
        raise ValueError("nn.Conv2d called on an unbatched input")
    out: dict[str, PerSample] = {}
    if "weight" in names:
        x_in, pad = conv_input(module, x)
        out["weight"] = ConvFactored(
            x_in, grad_out, module.kernel_size, module.stride, module.dilation, module.groups, module.weight.shape, pad
        )
    if "bias" in names:
        out["bias"] = Dense(grad_out.sum(dim=(2, 3)))
    return out
