"""Engine cost per optimizer step, every method measured side by side in one run.

    python benchmarks/engine.py [--repeats 3] [--rounds 1] [--quick] [--device cpu|cuda] [--window 50]

For the default tiny UNet at 16 and 32 px, and B=16/K=4 and B=64/K=16 (one draw per
target), prints milliseconds per step and the ratio to plain training on the B+K batch:

- plain:       one forward+backward of the B+K rows, optimizer-ready gradients only
               (PyTorch's own backward(): the baseline every ratio is against);
- plain (training pass): royalty's training pass over the B+K rows (engine/gradient.py:
               `.grad` as the sum of the per-sample gradients), what `--no-values`
               and the warm-up run, so that a valued step's `.grad` equals it;
- two passes:  plain forward+backward of the B rows, then of the K rows: what the engine
               cannot avoid (the training pass must be plain training's own), before
               any per-sample work;
- first:       the engine, first order (B×K values + the exact training gradient);
- first, nothing built: the same with `EngineConfig(built_limit=0)`: the training pass
               takes `.grad` from the summed kernels and the values build each layer's
               per-sample gradients after it, one layer at a time (less memory, more time);
- second:      the engine, order 2 (adds one Hessian-vector product per target: one
               double backward each, EngineConfig.hvp="loop", the default);
- second, batched HVPs: the same with every target's product in one vmapped double
               backward (hvp="batched");
- plain + AdamW step: plain, then the optimizer step (the baseline of the applied rows);
- applied first / applied second: a valued AdamW step that credits the update Adam
               applies (`--credit applied`, the default): the engine's passes, every
               row's per-sample gradient kept, and the step's target gradients dotted
               with the `--window` open batches (docs/design.md §1.6), then the AdamW
               step, with the scheme royalty picks (accumulated: one dot per batch
               opened and closed, and a settling every `rebase` steps; at least that
               many steps are timed, so its cost is the amortized one). The window is
               full, as in a run longer than it: its memory, window × B × D floats, is
               in the peak;
- applied first (direct) / applied second (direct): the same with the direct scheme
               (every open batch dotted with every step's targets);
- applied second (secant): applied second with `--curvature secant`: no Hessian-vector
               product; the targets' gradients once more after the step, which the next
               step reuses (the same target rows every step, as the exact estimator);
- torch.func:  vmap(grad) per-sample gradients of all B+K rows, then the B×K dots;
- loop:        one backward per row, then the dots.

Peak memory is each method's peak resident memory above what the process held before
it started (each method runs in its own forked child); with `--device cuda`, the peak
of GPU memory torch allocated, and times wait for the GPU to finish each step.
"""

from __future__ import annotations

import argparse
import re
import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch

from royalty.allocator import tune_cpu_allocator
from royalty.attribution.training.device import use_device
from royalty.attribution.engine.hvp import TargetSide
from royalty.attribution.engine.step import EngineConfig, Update, ValueEngine

LR = 0.01


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _setup(res: int, b: int, k: int, device: torch.device):
    from royalty.attribution.model.diffusion import build_default_unet, default_scheduler

    torch.manual_seed(0)
    unet = build_default_unet(res, seed=0).to(device)
    sched = default_scheduler()
    g = torch.Generator().manual_seed(0)
    x = torch.rand((b + k, 3, res, res), generator=g) * 2 - 1
    noise = torch.randn(x.shape, generator=g)
    t = torch.randint(0, 1000, (b + k,), generator=g)
    return unet, sched, x.to(device), t.to(device), noise.to(device)


def _applied(
    unet, order: int, window_steps: int, b: int, k: int, direct: bool, step_fn, curvature: str = "hessian"
) -> Callable[[], None]:
    """A full credit window of random batches, then one applied AdamW step per call, with
    the scheme royalty picks (accumulated for these windows), or the direct one."""
    from royalty.attribution.engine.window import CreditWindow, Slot, accumulates
    from royalty.attribution.training.applied import StepBatch, applied_step
    from royalty.attribution.training.config import TrainConfig

    engine = ValueEngine(unet, EngineConfig(order=order, self_check=False))
    opt = torch.optim.AdamW(unet.parameters(), lr=LR, foreach=False)
    device = next(unet.parameters()).device
    d = sum(p.numel() for p in unet.parameters())
    accumulate = not direct and accumulates(0.9, window_steps, k, k)
    window = CreditWindow(0.9, window_steps, torch.zeros(d, dtype=torch.float64, device=device), 0, k, accumulate)
    g = torch.Generator(device=device).manual_seed(1)
    for s in range(window_steps - 1):  # counts up to 0: the first timed step is count 1
        window.open(Slot(s - window_steps, s - window_steps + 2, torch.arange(b), b,
                         torch.randn((b, d), generator=g, device=device), torch.zeros(d, dtype=torch.float64, device=device)))
    cfg = TrainConfig(data=Path(), targets=Path(), out=Path(), optimizer="adamw", lr=LR, order=order, curvature=curvature)
    step, after = [0], [None]

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        batch, targets = step_fn()
        out = applied_step(cfg, opt, engine, window, StepBatch(
            step[0], torch.arange(b), batch, targets, torch.arange(k), torch.ones(k, dtype=torch.float64), False,
            at_weights=after[0]))
        step[0], after[0] = step[0] + 1, out.after

    return run


def _method(name: str, res: int, b: int, k: int, device: torch.device, window: int = 50) -> Callable[[], None]:
    # diffusers is imported here, in the forked child: on a GPU machine its import starts
    # CUDA, and a child forked from a parent that started CUDA cannot use it (seen on an H200)
    from royalty.attribution.model.diffusion import noise_prediction_losses

    unet, sched, x, t, noise = _setup(res, b, k, device)
    params = {n: p for n, p in unet.named_parameters()}
    tr, tg = slice(0, b), slice(b, b + k)
    index = torch.arange(k, device=device)

    def losses(rows: slice) -> Callable[[], torch.Tensor]:
        return lambda: noise_prediction_losses(unet, sched, x[rows], t[rows], noise[rows])

    def target_losses(sel: torch.Tensor | None) -> torch.Tensor:
        xs, ts, ns = x[tg], t[tg], noise[tg]
        if sel is not None:
            xs, ts, ns = xs[sel], ts[sel], ns[sel]
        return noise_prediction_losses(unet, sched, xs, ts, ns)

    if name == "plain":
        def run() -> None:
            unet.zero_grad(set_to_none=True)
            noise_prediction_losses(unet, sched, x, t, noise).mean().backward()
        return run
    if name == "plain (training pass)":
        from royalty.attribution.engine.gradient import TrainPass

        passes = TrainPass(unet, EngineConfig(self_check=False))

        def run() -> None:
            unet.zero_grad(set_to_none=True)
            passes.run([lambda: noise_prediction_losses(unet, sched, x, t, noise)], keep=False)
        return run
    if name == "plain + AdamW step":
        opt = torch.optim.AdamW(unet.parameters(), lr=LR, foreach=False)

        def run() -> None:
            opt.zero_grad(set_to_none=True)
            noise_prediction_losses(unet, sched, x, t, noise).mean().backward()
            opt.step()
        return run
    if name.startswith("applied"):
        return _applied(unet, 2 if "second" in name else 1, window, b, k, name.endswith("(direct)"),
                        lambda: (losses(tr), TargetSide(target_losses, index, k)),
                        "secant" if name.endswith("(secant)") else "hessian")
    if name == "two passes":
        # the engine's floor: plain training's backward of the B training rows (which
        # `.grad` must match bit for bit) and a separate pass over the K target rows
        def run() -> None:
            unet.zero_grad(set_to_none=True)
            noise_prediction_losses(unet, sched, x[tr], t[tr], noise[tr]).mean().backward()
            noise_prediction_losses(unet, sched, x[tg], t[tg], noise[tg]).mean().backward()
        return run
    if name in ("first", "second", "second, batched HVPs", "first, nothing built"):
        order = 2 if name.startswith("second") else 1
        hvp = "batched" if name == "second, batched HVPs" else "loop"
        # nothing built: `.grad` from the summed kernels, each layer's per-sample gradients
        # built for its dots after the pass and freed (EngineConfig.built_limit = 0)
        built = 0 if name.endswith("nothing built") else EngineConfig.built_limit
        engine = ValueEngine(unet, EngineConfig(order=order, self_check=False, hvp=hvp, built_limit=built))

        def run() -> None:
            unet.zero_grad(set_to_none=True)
            engine.step(losses(tr), TargetSide(target_losses, index, k), Update(LR))
        return run
    if name == "torch.func":
        from torch.func import functional_call, grad, vmap

        def single(p, xi, ti, ni):
            out = functional_call(unet, p, (sched.add_noise(xi[None], ni[None], ti[None]), ti[None])).sample
            return ((out - ni[None]) ** 2).mean()

        per_sample = vmap(grad(single), in_dims=(None, 0, 0, 0))
        detached = {n: p.detach() for n, p in params.items()}

        def run() -> None:
            g = per_sample(detached, x, t, noise)
            flat = torch.cat([v.reshape(b + k, -1) for v in g.values()], dim=1)
            (flat[:b] @ flat[b:].T) * (LR / b)
        return run
    if name == "loop":
        plist = list(params.values())

        def run() -> None:
            rows = []
            for i in range(b + k):
                loss = noise_prediction_losses(unet, sched, x[i : i + 1], t[i : i + 1], noise[i : i + 1]).sum()
                rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, plist)]))
            flat = torch.stack(rows)
            (flat[:b] @ flat[b:].T) * (LR / b)
        return run
    raise ValueError(name)


def _measure(name: str, res: int, b: int, k: int, repeats: int, device_name: str, window: int, out: mp.Queue) -> None:
    base = _rss_mb()
    try:
        device = torch.device(device_name)
        gpu = device.type == "cuda"
        if gpu:
            use_device(device)  # the kernels `royalty train --device cuda` runs with
        run = _method(name, res, b, k, device, window)
        run()  # warm-up
        if gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() / 2**20
        if name.startswith("applied"):
            # the accumulated scheme settles every open batch each `rebase` steps: time at
            # least that many, so its cost per step is the amortized one
            from royalty.attribution.engine.window import rebase_interval

            repeats = max(repeats, rebase_interval(0.9, window))
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
        out.put((float("nan"), float("nan"), f"{type(exc).__name__}: {str(exc)[:80]}"))


def _median_of_rounds(results: list[tuple[float, float, str | None]]) -> tuple[float, float, str | None]:
    """Median time and largest peak over the rounds; a failure in any round is the cell's."""
    errors = [e for _, _, e in results if e]
    if errors:
        return float("nan"), float("nan"), errors[0]
    times = sorted(ms for ms, _, _ in results)
    return times[len(times) // 2], max(mb for _, mb, _ in results), None


METHODS = (
    "plain", "plain (training pass)", "two passes", "first", "first, nothing built", "second", "second, batched HVPs", "plain + AdamW step", "applied first",
    "applied first (direct)", "applied second", "applied second (direct)", "applied second (secant)", "torch.func", "loop",
)


def _parse_methods(text: str, ap: argparse.ArgumentParser) -> list[str]:
    """Comma-separated names; a comma followed by a space is part of a name ("second, batched HVPs")."""
    names = [m.strip() for m in re.split(r",(?! )", text) if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="measure every method this many times in turn; the median is printed")
    ap.add_argument("--no-allocator-tuning", action="store_true", help="leave glibc's allocator as it is (royalty's CLI tunes it: royalty/allocator.py)")
    ap.add_argument("--quick", action="store_true", help="16 px, B=16/K=4 only")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (each method in a forked child, which starts CUDA itself)")
    ap.add_argument("--window", type=int, default=50, help="open batches in the applied rows' credit window (the from-scratch job's 50 valued steps)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset (plain is always measured)")
    args = ap.parse_args()
    tuned = False if args.no_allocator_tuning else tune_cpu_allocator()  # as the CLI does; forked children inherit it
    ctx = mp.get_context("fork")
    cases = [(16, 16, 4)] if args.quick else [(16, 16, 4), (16, 64, 16), (32, 16, 4), (32, 64, 16)]
    # the parent never starts CUDA: a forked child could not start it again
    where = "" if args.device.startswith("cuda") else f", {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {args.device}{where}, {args.repeats} timed steps per cell, median of {args.rounds} round(s), "
          f"allocator {'tuned' if tuned else 'untouched'}")
    print("| px | B | K | method | ms/step | × plain | peak MB | × plain MB |")
    print("|---|---|---|---|---|---|---|---|")
    for res, b, k in cases:
        methods = ["plain"] + [m for m in _parse_methods(args.methods, ap) if m != "plain"]
        # rounds of every method in turn: this machine's speed drifts over minutes, and a
        # ratio of two cells measured minutes apart would carry that drift
        runs: dict[str, list[tuple[float, float, str | None]]] = {m: [] for m in methods}
        for _ in range(args.rounds):
            for name in methods:
                q: mp.Queue = ctx.Queue()
                p = ctx.Process(target=_measure, args=(name, res, b, k, args.repeats, args.device, args.window, q))
                p.start()
                runs[name].append(q.get())
                p.join()
        rows = {name: _median_of_rounds(r) for name, r in runs.items()}
        base_ms, base_mb = rows["plain"][0], rows["plain"][1]
        for name in methods:
            ms, mb, err = rows[name]
            if err:
                print(f"| {res} | {b} | {k} | {name} | failed: {err} | | | |")
                continue
            print(f"| {res} | {b} | {k} | {name} | {ms:.0f} | {ms / base_ms:.2f} | {mb:.0f} | {mb / base_mb:.2f} |")
        if {"first", "torch.func", "loop"} <= rows.keys():
            f = rows["first"][0]
            print(f"| {res} | {b} | {k} | first vs torch.func / loop | | {rows['torch.func'][0] / f:.2f}× / {rows['loop'][0] / f:.2f}× faster | | |", flush=True)


if __name__ == "__main__":
    main()
