"""Figure 3's measure: how colour-specific conv1's kernels are, and when a difference between columns means anything.

The paper (section 6.1) finds one column's kernels largely colour-agnostic and the other's largely
colour-specific. Random weights already score about 2/3 on the measure, and a handful of kernels
scatter widely, so two thresholds decide whether a measured difference says anything:
  - a column is "at the random level" when it lies in the central 99% of the measure for columns of
    as many random N(0, 1) kernels of the same shape (simulated, fixed seed);
  - a difference between the columns is "within noise" unless it exceeds the 99th percentile of the
    difference when the measured kernels are shuffled at random between two columns of the same
    sizes (a permutation test at the 1% level, fixed seed).
"""
import functools

import numpy as np
import torch

RANDOM_COLOUR_RATIO = 2 / 3  # expected chromatic energy share of i.i.d. random RGB kernels
LEVEL = 0.99  # both thresholds: the central 99% (random level) and the 99th percentile (differences)
DRAWS = 2000  # simulated random columns, and shuffles of the kernels between the columns
SEED = 0


def kernel_colour_specificity(kernels):
    """Per kernel (K x 3 x h x w): chromatic energy (weights minus their per-pixel RGB mean) / total energy."""
    k = torch.as_tensor(kernels).detach().to(device="cpu", dtype=torch.float64)
    chroma = k - k.mean(dim=1, keepdim=True)
    total = (k ** 2).sum(dim=(1, 2, 3)).clamp_min(1e-30)
    return (chroma ** 2).sum(dim=(1, 2, 3)) / total


def colour_specificity(kernels):
    """Mean over kernels of chromatic energy (weights minus their per-pixel RGB mean) / total energy."""
    return float(kernel_colour_specificity(kernels).mean())


@functools.lru_cache(maxsize=16)  # both columns of a net share one simulation
def random_range(count, shape, draws=DRAWS, seed=SEED, level=LEVEL):
    """(low, high): the central `level` of the measure for `count` random N(0, 1) kernels of `shape`, simulated."""
    g = torch.Generator().manual_seed(seed)
    chunk = max(1, 4_000_000 // max(1, count * int(np.prod(shape))))  # bounded memory for wide nets
    means = []
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        k = torch.randn((n * count, *shape), generator=g, dtype=torch.float64)
        means.append(kernel_colour_specificity(k).view(n, count).mean(dim=1))
    means = torch.cat(means).numpy()
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def shuffled_differences(values_a, values_b, draws=DRAWS, seed=SEED):
    """|mean(a') - mean(b')| for `draws` random reassignments of the per-kernel values to columns of the same sizes."""
    values = np.concatenate([np.asarray(values_a, np.float64), np.asarray(values_b, np.float64)])
    rng = np.random.default_rng(seed)
    order = rng.permuted(np.tile(np.arange(len(values)), (draws, 1)), axis=1)
    shuffled = values[order]
    na = len(values_a)
    return np.abs(shuffled[:, :na].mean(axis=1) - shuffled[:, na:].mean(axis=1))


def compare_columns(kernels_a, kernels_b, draws=DRAWS, seed=SEED, level=LEVEL):
    """Measure both columns and decide what their difference means.

    Returns a dict: a, b (the measures), ranges (random-level range of each column), places ("below",
    "inside" or "above" its range), threshold (the difference that counts), p (share of shuffles
    with a difference at least as large), and verdict: "random" (both columns at the random level:
    the difference means nothing), "noise" (the difference is within noise) or "different".
    """
    va, vb = kernel_colour_specificity(kernels_a).numpy(), kernel_colour_specificity(kernels_b).numpy()
    a, b = float(va.mean()), float(vb.mean())
    ranges = [random_range(len(v), tuple(int(d) for d in k.shape[1:]), draws, seed, level)
              for v, k in ((va, kernels_a), (vb, kernels_b))]
    places = ["below" if m < lo else "above" if m > hi else "inside" for m, (lo, hi) in zip((a, b), ranges)]
    diffs = shuffled_differences(va, vb, draws, seed)
    threshold = float(np.quantile(diffs, level))
    observed = abs(a - b)
    if places == ["inside", "inside"]:
        verdict = "random"
    elif observed <= threshold:
        verdict = "noise"
    else:
        verdict = "different"
    return {"a": a, "b": b, "ranges": ranges, "places": places, "threshold": threshold,
            "p": float(np.mean(diffs >= observed)), "verdict": verdict, "counts": (len(va), len(vb)),
            "draws": draws, "seed": seed, "level": level}
