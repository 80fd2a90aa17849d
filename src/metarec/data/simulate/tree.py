"""Stages 1 and 2: the category tree's latent vectors and the leaves' staggered launch times."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarec.data.simulate.config import SimulationConfig
from metarec.data.simulate.vocabulary import LEAVES


@dataclass(frozen=True)
class _Tree:
    vectors: np.ndarray  # (n_leaves, d)
    parent: np.ndarray  # (n_leaves,) index of the leaf's parent node, for sibling lookups
    subdomain: np.ndarray  # (n_leaves,) index of the leaf's second-level node
    is_book: np.ndarray  # (n_leaves,) bool
    launch: np.ndarray  # (n_leaves,) int64 unix seconds
    descriptions: tuple[str, ...]


def _build_tree(rng: np.random.Generator, config: SimulationConfig) -> _Tree:
    """Latent vectors of every node (each around its parent's) and staggered launch times."""
    d = config.latent_dim
    node_vec: dict[str, np.ndarray] = {}
    paths = [leaf.path.split(" > ") for leaf in LEAVES]
    stds = np.asarray(config.category_std)
    for depth in range(3):
        for parts in paths:
            if depth >= len(parts):
                continue
            key = " > ".join(parts[: depth + 1])
            if key in node_vec:
                continue
            base = node_vec[" > ".join(parts[:depth])] if depth else np.zeros(d)
            # a leaf above the deepest level takes the variance of the levels it skips
            last = depth == len(parts) - 1
            std = float(np.sqrt(np.sum(stds[depth:] ** 2))) if last else float(stds[depth])
            node_vec[key] = base + std * rng.standard_normal(d)
    parents = [" > ".join(p[:-1]) for p in paths]
    parent_names = sorted(set(parents))
    subdomains = sorted({" > ".join(p[:2]) for p in paths})

    n_leaves = len(LEAVES)
    late = rng.permutation(n_leaves)[config.initial_categories :]
    offsets = np.zeros(n_leaves)
    offsets[late] = rng.uniform(0.0, config.last_launch_fraction, size=len(late))
    launch = config.start_time + np.ceil(offsets * config.span_days * 86_400).astype(np.int64)
    return _Tree(
        vectors=np.stack([node_vec[leaf.path] for leaf in LEAVES]),
        parent=np.array([parent_names.index(p) for p in parents]),
        subdomain=np.array([subdomains.index(" > ".join(p[:2])) for p in paths]),
        is_book=np.array([p[0] == "Books" for p in paths]),
        launch=launch,
        descriptions=tuple(leaf.description for leaf in LEAVES),
    )
