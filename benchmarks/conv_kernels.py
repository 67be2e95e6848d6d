"""What building per-sample convolution weight gradients costs on this device.

    python benchmarks/conv_kernels.py [--res 16 32] [--batch 16 64] [--repeats 15] [--device cpu|cuda]

The values need each training row's own weight gradient of every Conv2d (or, where it
is cheaper, ghost or forward dot products, which at these shapes are not: see
attribution/engine/paths.py); plain training needs only their sum. For every Conv2d
call of the default UNet at the given resolution (shapes captured from one forward),
this times side by side, in one run:

- summed:    torch's weight-gradient convolution over the batch (what autograd runs for
             plain training; the baseline of every ratio);
- engine:    the engine's per-sample build (`ConvFactored.materialize`: the same kernel
             with the samples folded into groups, one call for the batch);
- unfold:    im2col (`F.unfold`) and one batched matrix product per layer;
- loop:      the weight-gradient convolution once per sample;
- torch.func: `vmap(grad)` of the layer's output dotted with its output gradient, over
             the samples (what torch.func per-sample gradients run for this layer).

Each cell is the median of `--repeats` calls after two warm-up calls; the table's totals
weigh each shape by how often the UNet calls it. The ratios say how far the per-sample
gradients alone keep a valued step above a plain one on this device.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from royalty.allocator import tune_cpu_allocator
from royalty.attribution.engine.rules.conv2d import conv2d

METHODS = ("summed", "engine", "unfold", "loop", "torch.func")


def conv_shapes(res: int) -> Counter:
    """(C_in, C_out, H, W, kernel, stride, padding) of every Conv2d call in one forward."""
    from royalty.attribution.model.diffusion import build_default_unet

    unet = build_default_unet(res, seed=0)
    seen: Counter = Counter()

    def hook(module: nn.Module, args: tuple, _out: torch.Tensor) -> None:
        x = args[0]
        seen[(module.in_channels, module.out_channels, x.shape[2], x.shape[3], module.kernel_size, module.stride, module.padding)] += 1

    handles = [m.register_forward_hook(hook) for m in unet.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        unet(torch.zeros(1, 3, res, res), torch.zeros(1, dtype=torch.long))
    for h in handles:
        h.remove()
    return seen


def kernels(batch: int, shape: tuple, device: torch.device) -> dict[str, Callable[[], torch.Tensor]]:
    c_in, c_out, h, w, kernel, stride, padding = shape
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((batch, c_in, h, w), generator=g)
    with torch.no_grad():
        y = conv(x)
    gy = torch.randn(y.shape, generator=g)
    conv, x, gy = conv.to(device), x.to(device), gy.to(device)
    weight = conv.weight.detach()

    def rep(xs: torch.Tensor, gys: torch.Tensor):
        """The engine's own Conv2d rule on these rows (its ConvFactored)."""
        return conv2d(conv, xs, gys, ("weight",))["weight"]

    batch_rep = rep(x, gy)
    # the layer's weight-gradient convolution over the batch: what autograd runs
    summed = batch_rep.summed

    def unfold() -> torch.Tensor:
        cols = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)
        return torch.bmm(gy.reshape(batch, c_out, -1), cols.transpose(1, 2))

    def loop() -> torch.Tensor:
        return torch.stack([rep(x[i : i + 1], gy[i : i + 1]).summed() for i in range(batch)])

    def one(wt: torch.Tensor, xi: torch.Tensor, gi: torch.Tensor) -> torch.Tensor:
        return (F.conv2d(xi.unsqueeze(0), wt, stride=conv.stride, padding=conv.padding) * gi.unsqueeze(0)).sum()

    per_sample = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))

    def func() -> torch.Tensor:
        return per_sample(weight, x, gy)

    # every method's per-sample gradients must sum to the weight gradient (a wrong kernel
    # timed fast would be worse than none): float64's, within float32 rounding of its scale
    want = conv2d(copy.deepcopy(conv).double(), x.double(), gy.double(), ("weight",))["weight"].summed().reshape(-1)
    scale = float(want.abs().max())
    fns = {"summed": summed, "engine": batch_rep.materialize, "unfold": unfold, "loop": loop, "torch.func": func}
    for name, fn in fns.items():
        got = fn().reshape(-1, want.numel()).sum(0).double()
        if float((got - want).abs().max()) > 1e-5 * scale:
            raise AssertionError(f"{name} does not sum to the weight gradient for {shape}")
    return fns


def median_ms(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--res", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-allocator-tuning", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        from royalty.attribution.training.device import use_device

        use_device(device)  # the kernels `royalty train --device cuda` runs with
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}")
    else:
        if not args.no_allocator_tuning:
            tune_cpu_allocator()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for res in args.res:
        shapes = conv_shapes(res)
        for batch in args.batch:
            print(f"\n{res} px, B={batch}: ms per call (× summed)")
            print("| C_in | C_out | H×W | k | calls | " + " | ".join(METHODS) + " |")
            print("|---" * (5 + len(METHODS)) + "|")
            totals = dict.fromkeys(METHODS, 0.0)
            for shape, calls in sorted(shapes.items()):
                fns = kernels(batch, shape, device)
                ms = {m: median_ms(fns[m], args.repeats, device) for m in METHODS}
                for m in METHODS:
                    totals[m] += calls * ms[m]
                cells = " | ".join(f"{ms[m]:.2f} ({ms[m] / ms['summed']:.1f}×)" for m in METHODS)
                c_in, c_out, h, w, kernel, _, _ = shape
                print(f"| {c_in} | {c_out} | {h}×{w} | {kernel[0]}×{kernel[1]} | {calls} | {cells} |")
            cells = " | ".join(f"{totals[m]:.1f} ({totals[m] / totals['summed']:.2f}×)" for m in METHODS)
            print(f"| all | | | | {sum(shapes.values())} | {cells} |")


if __name__ == "__main__":
    main()
