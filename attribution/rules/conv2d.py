"""nn.Conv2d with any stride, padding (incl. 'same' and non-zero modes), dilation, groups.

After `unfold`, a convolution is a linear map per output position: a_p is the
C_in/groups·kh·kw patch feeding position p, b_p the output gradient there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from royalty.attribution.rules.base import Dense, Factored, PerSample, register


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


def conv_patches(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """[N, G, P, C_in/G·kh·kw] input patches, positions in output raster order."""
    pad = _explicit_padding(module)
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    if any(pad):
        x = F.pad(x, pad, mode=mode)
    cols = F.unfold(x, module.kernel_size, dilation=module.dilation, stride=module.stride)  # [N, C_in·k·k, P]
    n, _, p = cols.shape
    g = module.groups
    return cols.reshape(n, g, -1, p).transpose(2, 3)


@register(nn.Conv2d, ("weight", "bias"))
def conv2d(module: nn.Conv2d, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]) -> dict[str, PerSample]:
    if x.dim() != 4:
        raise ValueError("nn.Conv2d called on an unbatched input")
    n, c_out = grad_out.shape[:2]
    g = module.groups
    b = grad_out.reshape(n, g, c_out // g, -1).transpose(2, 3)  # [N, G, P, C_out/G]
    out: dict[str, PerSample] = {}
    if "weight" in names:
        out["weight"] = Factored(conv_patches(module, x), b, module.weight.shape)
    if "bias" in names:
        out["bias"] = Dense(grad_out.sum(dim=(2, 3)))
    return out
