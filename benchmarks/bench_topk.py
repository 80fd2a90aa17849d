"""The short list's top-k: ``retrieval.top_k_positions`` against ``torch.topk`` in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_topk.py [--repeat 200]

What the service's retrieval asks per ranking call: the 300 best of ``b`` users' approximate
scores over a category's items (one user, the batcher's groups of 4, and 16), with every fifth
item seen (-inf), as a request's own items are. Both give the same k largest values
(``tests/ranking/test_retrieval_batched.py``); only time is measured here, as microseconds per
call and the ratio ``torch.topk / top_k_positions`` measured side by side.

Prints a table and, last, a JSON summary.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench_scoring import mean_seconds  # benchmarks/ is the script's directory
from metarec.ranking.retrieval import top_k_positions

SIZES = (10_000, 100_000, 1_000_000)
ROWS = (1, 4, 16)
K = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    summary = {}
    print("| items | users | torch.topk us | top_k_positions us | ratio |")
    print("|---|---|---|---|---|")
    for n in SIZES:
        for b in ROWS:
            values = torch.randn(b, n, generator=generator)
            values[:, ::5] = -torch.inf
            repeat = max(5, args.repeat * 100_000 // n // b)
            plain = mean_seconds(lambda v=values: torch.topk(v, K, dim=-1), repeat)
            ours = mean_seconds(lambda v=values: top_k_positions(v, K), repeat)
            key = f"{n}x{b}"
            summary[key] = {
                "torch_topk_us": round(plain * 1e6, 1),
                "top_k_positions_us": round(ours * 1e6, 1),
                "ratio": round(plain / ours, 2),
            }
            row = summary[key]
            print(
                f"| {n:,} | {b} | {row['torch_topk_us']} | {row['top_k_positions_us']} "
                f"| {row['ratio']} |",
                flush=True,
            )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
