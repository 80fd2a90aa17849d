"""The two hot spots of an evaluation, before and after, in one process (issue 11).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scoring.py [--users 256] [--items 1500]

1. The folded first layer over every (user, item) pair without gradients: the sum of its terms as
   it was written before (one new ``(b, n, h)`` tensor per term) against :meth:`FoldedLayer.h1`
   now (in place); the outputs must be bit-identical.
2. Bootstrap CIs of a launch's records (5 metrics x 3 cutoffs over the same users and seed):
   fresh draws per call, as before, against :func:`metarec.evaluation.stats.bootstrap_cis` now
   (``scipy.stats.bootstrap``, one set of draws for all 15); the intervals must be identical.

Prints a table and, last, a JSON summary (seconds per repetition and the speed-up ratios).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from metarec.evaluation import stats
from metarec.models.folded import FoldedLayer, ItemSide


def mean_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Mean wall seconds of ``repeat`` calls of ``fn`` after one warm-up call."""
    fn()  # warm up
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def _layer(b: int, n: int, h: int, d: int, seed: int = 0) -> tuple[FoldedLayer, ItemSide]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g)

    from metarec.models.folded import _COLUMN  # the scalar columns' layout

    layer = FoldedLayer(
        item=r(b, h, d),
        unit_profile=r(b, d),
        unit_support=r(b, d),
        scalars=r(h, len(_COLUMN)),
        user_terms=r(b, h),
        cf_unit=r(b, 8),
    )
    items = ItemSide(
        z=r(n, d), pop=torch.rand(n, generator=g) * 50, pop_max=torch.tensor(50.0), unit_sum=r(n, 8)
    )
    return layer, items


def _h1_before(layer: FoldedLayer, items: ItemSide) -> torch.Tensor:
    z = items.z
    h1 = torch.einsum("bhd,nd->bnh", layer.item, z)
    z_unit = z / z.norm(dim=1).clamp_min(1e-8)[:, None]
    cos_p = layer.unit_profile @ z_unit.T
    cos_s = layer.unit_support @ z_unit.T
    item_terms = torch.outer(torch.log1p(items.pop), layer.column("log_pop")) + torch.outer(
        items.pop / items.pop_max.clamp_min(1.0), layer.column("pop_share")
    )
    return (
        h1
        + cos_p[..., None] * layer.column("cos_profile")
        + cos_s[..., None] * layer.column("cos_support")
        + layer.affinity(items)[..., None] * layer.column("affinity")
        + item_terms[None]
        + layer.user_terms[:, None]
    )


def _bootstrap_before(values: np.ndarray, seed: int, n_resamples: int) -> tuple[float, ...]:
    rng = np.random.default_rng(seed)
    n = len(values)
    per_chunk = max(1, 2_000_000 // n)
    means = np.concatenate(
        [
            values[rng.integers(0, n, size=(min(per_chunk, n_resamples - done), n))].mean(axis=1)
            for done in range(0, n_resamples, per_chunk)
        ]
    )
    low, high = np.quantile(means, [0.025, 0.975])
    return float(values.mean()), float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    layer, items = _layer(args.users, args.items, args.hidden, d=40)
    with torch.no_grad():
        assert torch.equal(_h1_before(layer, items), layer.h1(items)), "not bit-identical"
        before = mean_seconds(lambda: _h1_before(layer, items), args.repeat)
        after = mean_seconds(lambda: layer.h1(items), args.repeat)

    rng = np.random.default_rng(0)
    metrics = [rng.random(1200) for _ in range(15)]

    def records_before() -> list[tuple[float, ...]]:
        return [_bootstrap_before(v, seed=7, n_resamples=1000) for v in metrics]

    def records_after() -> list[tuple[float, ...]]:
        return stats.bootstrap_cis(metrics, seed=7, n_resamples=1000)

    assert records_before() == records_after(), "bootstrap intervals differ"
    boot_before = mean_seconds(records_before, args.repeat)
    boot_after = mean_seconds(records_after, args.repeat)

    print(f"{'step':<34}{'before s':>10}{'after s':>10}{'ratio':>8}")
    print(
        f"{f'first layer, {args.users} x {args.items} pairs':<34}"
        f"{before:>10.4f}{after:>10.4f}{before / after:>8.2f}"
    )
    print(
        f"{'bootstrap, 15 records x 1200 users':<34}"
        f"{boot_before:>10.4f}{boot_after:>10.4f}{boot_before / boot_after:>8.2f}"
    )
    print(
        json.dumps(
            {
                "first_layer_s": {"before": before, "after": after, "speedup": before / after},
                "bootstrap_s": {
                    "before": boot_before,
                    "after": boot_after,
                    "speedup": boot_before / boot_after,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
