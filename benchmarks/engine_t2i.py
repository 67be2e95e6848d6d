"""Engine cost per step on a text-to-image UNet with LoRA, every method side by side.

    python benchmarks/engine_t2i.py [--size tiny|sd15] [--device cpu|cuda] [--batch 8]
                                    [--targets 4] [--rank 16] [--repeats 3]

A `UNet2DConditionModel` built from its config with random weights (no download):
`tiny` (block_out_channels (32, 64), cross-attention width 32, 8×8 latents, a 77-token
caption embedding) for a CPU, `sd15` (Stable Diffusion 1.5's UNet config: 860 M
parameters, 64×64×4 latents, 77×768 caption embeddings) for a GPU. The base is frozen
and peft LoRA adapters of rank `--rank` sit on the attention projections diffusers'
LoRA script targets (to_q, to_k, to_v, to_out.0); lora_B is drawn at random rather
than diffusers' zeros so every LoRA gradient is non-zero.

Methods, as in benchmarks/engine.py, all on B training rows + K target rows:
plain (one forward+backward of the B+K rows), two passes (B rows, then K rows: the
engine's floor), first, second (loop HVPs), torch.func (vmap(grad) over the LoRA
parameters, then the dots); and as `royalty train` values a fine-tune, an AdamW step that
credits the applied update (docs/design.md §1.6): `plain + AdamW step` (its baseline),
`applied first`, `applied second` (Hessian-vector products) and `applied second (secant)`
(the fine-tune's default: the targets' gradients after the step, reused by the next one);
the credit window starts empty and holds every batch of the timed steps, as in a run
shorter than the window. Milliseconds per step, × plain, peak memory above the
model's (GPU: torch's allocator; CPU: resident), × plain. With `--device cuda` the
kernels are those `royalty train --device cuda` uses (deterministic, no TF32).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from royalty.attribution.engine.hvp import TargetSide
from royalty.attribution.engine.step import EngineConfig, Update, ValueEngine
from royalty.attribution.training.device import use_device

LR = 1e-4
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]

SIZES = {
    "tiny": dict(
        config=dict(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        ),
        latent=8, text_dim=32,
    ),
    "sd15": dict(
        config=dict(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32, cross_attention_dim=768, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        ),
        latent=64, text_dim=768,
    ),
}
TOKENS = 77


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def build(size: str, rank: int, device: torch.device):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(0)
    with device:  # an 860 M-parameter init is slow on a CPU: draw the weights where they live
        unet = UNet2DConditionModel(**SIZES[size]["config"])
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
    return unet, DDPMScheduler(num_train_timesteps=1000)


def _batch(size: str, n: int, device: torch.device):
    spec = SIZES[size]
    g = torch.Generator().manual_seed(1)
    lat = torch.randn((n, 4, spec["latent"], spec["latent"]), generator=g)
    text = torch.randn((n, TOKENS, spec["text_dim"]), generator=g)
    noise = torch.randn(lat.shape, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    return lat.to(device), text.to(device), noise.to(device), t.to(device)


@dataclass(frozen=True)
class Case:
    size: str
    b: int  # training rows
    k: int  # target rows (one per target)
    rank: int


def _method(name: str, case: Case, device: torch.device) -> Callable[[], None]:
    size, b, k = case.size, case.b, case.k
    unet, sched = build(size, case.rank, device)
    lat, text, noise, t = _batch(size, b + k, device)
    tr, tg = slice(0, b), slice(b, b + k)
    index = torch.arange(k, device=device)

    def losses_of(rows) -> torch.Tensor:
        noisy = sched.add_noise(lat[rows], noise[rows], t[rows])
        out = unet(noisy, t[rows], encoder_hidden_states=text[rows]).sample
        return ((out - noise[rows]) ** 2).flatten(1).mean(1)

    def target_losses(sel: torch.Tensor | None) -> torch.Tensor:
        rows = torch.arange(b, b + k, device=device)
        return losses_of(rows if sel is None else rows[sel])

    if name == "plain":
        def run() -> None:
            unet.zero_grad(set_to_none=True)
            losses_of(slice(0, b + k)).mean().backward()
        return run
    if name == "two passes":
        def run() -> None:
            unet.zero_grad(set_to_none=True)
            losses_of(tr).mean().backward()
            losses_of(tg).mean().backward()
        return run
    if name in ("first", "second"):
        engine = ValueEngine(unet, EngineConfig(order=1 if name == "first" else 2, self_check=False))

        def run() -> None:
            unet.zero_grad(set_to_none=True)
            engine.step(lambda: losses_of(tr), TargetSide(target_losses, index, k), Update(LR))
        return run
    if name == "plain + AdamW step":
        opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=LR, foreach=False)

        def run() -> None:
            opt.zero_grad(set_to_none=True)
            losses_of(slice(0, b + k)).mean().backward()
            opt.step()
        return run
    if name.startswith("applied"):
        return _applied(unet, name, lambda: losses_of(tr), TargetSide(target_losses, index, k), b, k)
    if name == "torch.func":
        from torch.func import functional_call, grad, vmap

        lora = {n: p.detach() for n, p in unet.named_parameters() if p.requires_grad}

        def single(p, li, ci, ni, ti):
            noisy = sched.add_noise(li[None], ni[None], ti[None])
            out = functional_call(unet, p, (noisy, ti[None]), {"encoder_hidden_states": ci[None]}, strict=False).sample
            return ((out - ni[None]) ** 2).mean()

        per_sample = vmap(grad(single), in_dims=(None, 0, 0, 0, 0))

        def run() -> None:
            g = per_sample(lora, lat, text, noise, t)
            flat = torch.cat([v.reshape(b + k, -1) for v in g.values()], dim=1)
            (flat[:b] @ flat[b:].T) * (LR / b)
        return run
    raise ValueError(name)


def _applied(unet, name: str, train_losses, targets: TargetSide, b: int, k: int) -> Callable[[], None]:
    """One valued AdamW step of `royalty train` per call, the window growing step by step."""
    from pathlib import Path

    from royalty.attribution.training.applied import StepBatch, applied_step, new_window
    from royalty.attribution.training.config import TrainConfig

    order, curvature = (1, "hessian") if name == "applied first" else (2, "secant" if name.endswith("(secant)") else "hessian")
    cfg = TrainConfig(data=Path(), targets=Path(), out=Path(), optimizer="adamw", lr=LR, order=order, curvature=curvature)
    engine = ValueEngine(unet, EngineConfig(order=order, self_check=False))
    opt = torch.optim.AdamW(list(engine.params.values()), lr=LR, foreach=False)
    window = new_window(cfg, opt, engine.params, k, k)
    step, after = [0], [None]

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        out = applied_step(cfg, opt, engine, window, StepBatch(
            step[0], torch.arange(b), train_losses, targets, torch.arange(k), torch.ones(k, dtype=torch.float64), False,
            at_weights=after[0]))
        step[0], after[0] = step[0] + 1, out.after
    return run


def _measure(name: str, case: Case, repeats: int, device_name: str, out: mp.Queue) -> None:
    base = _rss_mb()
    try:
        device = torch.device(device_name)
        gpu = device.type == "cuda"
        if gpu:
            use_device(device)
        run = _method(name, case, device)
        run()  # warm-up
        if gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() / 2**20
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        if gpu:
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) / repeats * 1000
        if gpu:
            peak = torch.cuda.max_memory_allocated() / 2**20 - base
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
        out.put((ms, peak, None))
    except Exception as exc:  # report, don't hide: the table says which method failed
        out.put((float("nan"), float("nan"), f"{type(exc).__name__}: {str(exc)[:120]}"))


# torch.func last: on the SD-1.5 UNet it may not finish within a GPU check's time limit
METHODS = (
    "plain", "two passes", "first", "second", "plain + AdamW step", "applied first", "applied second",
    "applied second (secant)", "torch.func",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of: " + ", ".join(METHODS))
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    ctx = mp.get_context("fork")  # the parent never starts CUDA: a forked child could not
    b, k = args.batch, args.targets
    print(f"torch {torch.__version__}, {args.device}, UNet {args.size}, LoRA rank {args.rank}, {args.repeats} timed steps")
    print("| UNet | B | K | method | ms/step | × plain | peak MB | × plain MB |")
    print("|---|---|---|---|---|---|---|---|")
    rows = {}
    for name in methods:
        q: mp.Queue = ctx.Queue()
        p = ctx.Process(target=_measure, args=(name, Case(args.size, b, k, args.rank), args.repeats, args.device, q))
        p.start()
        rows[name] = q.get()
        p.join()
        ms, mb, err = rows[name]
        base_ms, base_mb = rows.get("plain", (ms, mb, None))[:2]
        if err:
            print(f"| {args.size} | {b} | {k} | {name} | failed: {err} | | | |", flush=True)
        else:
            print(f"| {args.size} | {b} | {k} | {name} | {ms:.0f} | {ms / base_ms:.2f} | {mb:.0f} | {mb / base_mb:.2f} |", flush=True)


if __name__ == "__main__":
    main()
