"""Exact scoring of every item, chunked by users: the old chunk rule against the new, one process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_score_chunks.py [--users 4000] \\
        [--items 1000] [--repeat 3]

Evaluation scores every item of a category for every test user through
:func:`metarec.models.folded.folded_scores`, a chunk of users at a time
(:meth:`metarec.ranking.CategoryRanker.scores`). Before, a chunk held 2,000,000 (user, item)
pairs, so each ``(users, items, hidden)`` temporary was 488 MiB at 64 hidden units: glibc maps
a block that large afresh on every allocation and the kernel faults every page in again. Now a
chunk holds 2^21 first-layer values (8 MiB), under glibc's largest mmap threshold (32 MiB), so
the heap reuses the same blocks. This times both rules (and a few others) on the same random
model, users and items, and checks the scores are identical.

Prints one line per chunk size and, last, a JSON summary with the old / new ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from metarec.models.folded import ItemSide, UserSide, folded_scores

OLD_PAIRS = 2_000_000  # the rule before: (users x items) pairs per chunk
NEW_VALUES = 1 << 21  # the rule now: (users x items x hidden) first-layer values per chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    d, r, hidden = 80, 32, (64, 32, 1)  # ML-1M-like width, the default (64, 32) scorer
    params: dict[str, torch.Tensor] = {}
    width = 3 * d + 7
    for i, h in enumerate(hidden):
        params[f"layers.{i}.weight"] = 0.1 * torch.randn(h, width, generator=g)
        params[f"layers.{i}.bias"] = 0.1 * torch.randn(h, generator=g)
        width = h
    n, u = args.items, args.users
    items = ItemSide(
        torch.rand(n, d, generator=g),
        5 * torch.rand(n, generator=g),
        torch.tensor(5.0),
        torch.rand(n, r, generator=g),
    )
    users = UserSide(
        torch.rand(u, d, generator=g),
        torch.rand(u, d, generator=g),
        50 * torch.rand(u, generator=g),
        3 * torch.rand(u, generator=g),
        r,
    )

    def scored(chunk: int) -> torch.Tensor:
        with torch.no_grad():
            parts = [
                folded_scores(
                    params,
                    UserSide(
                        users.profile[i : i + chunk],
                        users.support[i : i + chunk],
                        users.n_other[i : i + chunk],
                        users.n_support[i : i + chunk],
                        r,
                    ),
                    items,
                )
                for i in range(0, u, chunk)
            ]
        return torch.cat(parts)

    old = max(1, OLD_PAIRS // n)
    new = max(1, NEW_VALUES // (n * hidden[0]))
    reference = scored(old)
    seconds: dict[int, float] = {}
    for chunk in sorted({old, new, 4 * new, new // 4 or 1, 1024 // max(1, n // 1000)}):
        identical = torch.equal(scored(chunk), reference)
        started = time.perf_counter()
        for _ in range(args.repeat):
            scored(chunk)
        seconds[chunk] = (time.perf_counter() - started) / args.repeat
        rule = " (before)" if chunk == old else " (now)" if chunk == new else ""
        print(
            f"{chunk:>6} users per chunk{rule:9}: {seconds[chunk]:7.3f} s for {u} x {n}; "
            f"scores {'identical' if identical else 'DIFFERENT'} to the old rule's",
            flush=True,
        )
    summary = {
        "users": u,
        "items": n,
        "old_chunk_users": old,
        "new_chunk_users": new,
        "old_s": round(seconds[old], 4),
        "new_s": round(seconds[new], 4),
        "speedup": round(seconds[old] / seconds[new], 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
