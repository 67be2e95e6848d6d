"""Every random choice of a run, derived from (seed, purpose, step).

Deriving each step's randomness from its index rather than from a running generator
means a resumed run draws exactly what the uninterrupted run drew, with no RNG state
in the checkpoint, and `royalty attribute --mode replay` can re-draw any step.
"""

from __future__ import annotations

import hashlib

import torch


def generator(seed: int, purpose: str, index: int = 0) -> torch.Generator:
    digest = hashlib.sha256(f"royalty:{seed}:{purpose}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def batch_indices(seed: int, step: int, batch_size: int, n: int, purpose: str = "order") -> torch.Tensor:
    """Step `step`'s batch: positions [step·B, (step+1)·B) of a stream of epoch permutations."""
    start = step * batch_size
    out = []
    pos = start
    while pos < start + batch_size:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=generator(seed, purpose, epoch))
        take = min(n - offset, start + batch_size - pos)
        out.append(perm[offset : offset + take])
        pos += take
    return torch.cat(out)


def noise_draws(seed: int, purpose: str, index: int, n: int, shape: tuple[int, ...], max_timestep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps [n] in [0, max_timestep), noise [n, *shape]) for one purpose and step."""
    g = generator(seed, purpose, index)
    t = torch.randint(0, max_timestep, (n,), generator=g)
    noise = torch.randn((n, *shape), generator=g)
    return t, noise
