"""EMCDR: map a user's taste learned elsewhere into a new category's latent space.

Man, Shen, Jin, Cheng. Cross-Domain Recommendation: An Embedding and Mapping Approach. IJCAI 2017.

EMCDR factorises a source and a target domain separately, then learns a mapping from source user
factors to target user factors on the users present in both. A new category has no target
factorisation yet, so the mapping must be shared by every category, which needs one latent space
for all of them. Choices, kept simple:

- **Shared space.** One implicit-feedback ALS on the training categories gives item factors
  ``Y``. A user's *target* factors in category ``c`` are their least-squares solve against ``Y``
  using only their positives in ``c`` (zero preference on ``c``'s other items); their *source*
  factors for ``c`` are the same solve using only their positives *outside* ``c``. Separate MFs
  per category would each live in an arbitrary rotation, and no single mapping could serve them.
- **Mapping.** Fitted on (training category, user) pairs with at least
  :data:`MIN_TARGET_POSITIVES` positives in ``c`` and one outside (at most
  :data:`MAX_EXAMPLES_PER_CATEGORY` users per category, sampled with the run's seed): ridge
  regression (``linear``) or the paper's one-hidden-layer MLP of ``2 f`` tanh units (``mlp``),
  squared error.
- **Launch.** Each user's source factors come from their visible history (the same solve); the
  mapping turns them into new-category factors; each new item is folded in from its support
  users' mapped factors (:func:`metarec.baselines.mf.solve_rows`, as for ALS). Score = mapped
  user · item + the popularity tie-break. A user without visible history gets zero factors:
  launch popularity order.

With the identity as mapping this is ALS with fold-in; the mapping adds what taste elsewhere says
about taste *inside* one category (for instance that it is narrower).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch

from metarec.baselines.base import Family, FitContext, Launch, visible_history
from metarec.baselines.mf import (
    QUICK_ALS_ITERATIONS,
    als_model,
    fit_factors,
    positive_matrix,
    solve_rows,
    support_confidence,
    with_tie_break,
)
from metarec.errors import NotAdaptedError
from metarec.seeds import derived_seed

Mapping = Literal["linear", "mlp"]

MIN_TARGET_POSITIVES = 2
"""Positives a user needs inside a training category to be a mapping example there: a target
solved from one positive is mostly that item's factor, which is noise."""

MAX_EXAMPLES_PER_CATEGORY = 1000
"""Users sampled (seeded) per training category: a 32-dimensional map needs a few thousand
examples, while solving every user of every category costs the whole history once per category."""

_RIDGE = 1.0  # ridge penalty of the linear mapping (examples number in the thousands)
_MLP_STEPS, _QUICK_MLP_STEPS, _MLP_BATCH, _MLP_LR, _MLP_WEIGHT_DECAY = 500, 50, 512, 0.01, 1e-4


class EMCDR:
    """Embedding-and-mapping cross-domain recommendation, one mapping shared by all categories.

    Example:
        >>> method = EMCDR(mapping="mlp")
        >>> method.fit(context)  # doctest: +SKIP
        >>> scores = method.scores(launch)  # (len(launch.users), n_items)  # doctest: +SKIP
    """

    name: ClassVar[str] = "emcdr"
    family: ClassVar[Family] = "baseline"
    grid: ClassVar[list[dict[str, Any]]] = [
        {"mapping": "linear", "factors": 32},
        {"mapping": "mlp", "factors": 32},
        {"mapping": "linear", "factors": 64},
        {"mapping": "mlp", "factors": 64},
    ]

    def __init__(
        self,
        mapping: Mapping = "linear",
        factors: int = 32,
        regularization: float = 30.0,
        alpha: float = 10.0,
        iterations: int = 15,
    ) -> None:
        self.mapping = mapping
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.item_factors: np.ndarray | None = None  # (n_items, f), zero outside training
        self.map_params: dict[str, torch.Tensor] = {}
        self.seed = 0
        self._cache: tuple[tuple[object, ...], np.ndarray, float] | None = None

    def fit(self, context: FitContext) -> None:
        """ALS on the training categories, then the mapping on their (source, target) pairs."""
        catalog = context.catalog
        matrix = positive_matrix(catalog.positives, len(catalog.users), len(catalog.items))
        self.seed = context.seed
        iterations = QUICK_ALS_ITERATIONS if context.quick else self.iterations
        _, items = fit_factors(
            lambda: als_model(
                self.factors, self.regularization, self.alpha, iterations, context.seed
            ),
            matrix,
        )
        source, target = mapping_examples(
            matrix * self.alpha,
            items,
            catalog.item_category,
            context.train,
            self.regularization,
            context.seed,
        )
        generator = torch.Generator().manual_seed(context.seed)
        steps = _QUICK_MLP_STEPS if context.quick else _MLP_STEPS
        self.map_params = fit_mapping(source, target, self.mapping, steps, generator)
        self.item_factors = items
        self._cache = None

    def scores(self, launch: Launch) -> torch.Tensor:
        """(len(launch.users), n_items) mapped user · folded-in item, plus the tie-break.

        Raises:
            NotAdaptedError: :meth:`fit` was not called.
        """
        if self.item_factors is None:
            raise NotAdaptedError("emcdr: call fit(context) before scores(launch)")
        mapped, penalty = self._mapped_users(launch)
        items = solve_rows(support_confidence(launch, self.alpha), mapped, penalty)
        dots = torch.from_numpy(mapped[launch.users] @ items.T)
        return with_tie_break(dots, launch, self.seed)

    def _mapped_users(self, launch: Launch) -> tuple[np.ndarray, float]:
        """(n_users, f) every user's mapped factors, and the fold-in penalty that goes with them.

        The same for every launch over the same visible history (every shot count and category
        of a fold), so the last one is cached, keyed by a checksum of that history.
        """
        assert self.item_factors is not None
        catalog = launch.catalog
        key, history = visible_history(launch)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        confidence = positive_matrix(history, len(catalog.users), len(catalog.items)) * self.alpha
        source = solve_rows(confidence, self.item_factors, self.regularization)
        known = source.any(axis=1)  # users with visible history on trained items
        mapped = np.zeros_like(source)
        if known.any():
            mapped[known] = apply_mapping(self.map_params, torch.from_numpy(source[known])).numpy()
        # The penalty follows the mapped factors' scale, so a mapping that only rescales users
        # leaves the scores as they were (the identity mapping gives ALS with fold-in).
        scale = float((mapped**2).sum() / max(float((source**2).sum()), 1e-12))
        self._cache = (key, mapped, self.regularization * scale)
        return mapped, self.regularization * scale


def mapping_examples(
    confidence: sp.csr_matrix,
    items: np.ndarray,
    item_category: np.ndarray,
    categories: list[str],
    regularization: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, f) source and (m, f) target factors of every (training category, user) example.

    A user's target factors in category ``c`` are the least-squares solve of their positives in
    ``c`` against the item factors ``items``, their source factors the same solve of their
    positives outside ``c`` (at most :data:`MAX_EXAMPLES_PER_CATEGORY` users per category,
    seeded; users need :data:`MIN_TARGET_POSITIVES` in ``c`` and one outside).

    Args:
        confidence: (n_users, n_items) confidence-weighted positives of the training categories.
        items: (n_items, f) item factors (zero outside training).
        item_category: (n_items,) each item's category.
        categories: the training categories examples are drawn from.
        regularization: the solve's ridge penalty.
        seed: the run's seed (the sample of users per category).
    """
    sources, targets = [], []
    gram = items.T @ items
    for name in categories:
        inside = item_category == name
        inside_items = items * inside[:, None]
        here = confidence @ sp.diags(inside.astype(np.float64))
        rest = confidence - here
        n_here = np.diff(here.tocsr().indptr)
        users = np.flatnonzero((n_here >= MIN_TARGET_POSITIVES) & (rest.getnnz(axis=1) > 0))
        if len(users) == 0:
            continue
        if len(users) > MAX_EXAMPLES_PER_CATEGORY:
            rng = np.random.default_rng(derived_seed(seed, f"emcdr:{name}"))
            users = np.sort(rng.choice(users, MAX_EXAMPLES_PER_CATEGORY, replace=False))
        gram_here = inside_items.T @ inside_items
        sources.append(
            solve_rows(rest.tocsr()[users], items, regularization, gram=gram - gram_here)
        )
        targets.append(solve_rows(here.tocsr()[users], items, regularization, gram=gram_here))
    if not sources:
        f = items.shape[1]
        return torch.zeros((0, f)), torch.zeros((0, f))
    return torch.from_numpy(np.concatenate(sources)), torch.from_numpy(np.concatenate(targets))


def fit_mapping(
    source: torch.Tensor,
    target: torch.Tensor,
    kind: Mapping,
    steps: int,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Fit the source → target mapping by squared error.

    Args:
        source, target: (m, f) float64 example pairs.
        kind: ``linear`` (closed-form ridge with intercept) or ``mlp`` (one tanh hidden layer of
            ``2 f`` units, Adam on seeded minibatches for ``steps`` steps).
        steps: Adam steps of the MLP.
        generator: seeds the MLP's initialisation.

    Returns:
        The mapping's params (see :func:`apply_mapping`); the identity without examples.
    """
    f = source.shape[1]
    if len(source) == 0:
        return {"w": torch.eye(f, dtype=torch.float64), "b": torch.zeros(f, dtype=torch.float64)}
    if kind == "linear":
        return linear_mapping(source, target, intercept=True)
    hidden = 2 * f
    x, y = source.float(), target.float()
    params = {
        "w1": torch.randn(f, hidden, generator=generator) / f**0.5,
        "b1": torch.zeros(hidden),
        "w2": torch.randn(hidden, f, generator=generator) / hidden**0.5,
        "b2": torch.zeros(f),
    }
    for value in params.values():
        value.requires_grad_(True)
    optimiser = torch.optim.Adam(list(params.values()), lr=_MLP_LR, weight_decay=_MLP_WEIGHT_DECAY)
    # fixed-size minibatches: the cost does not grow with the number of examples
    for _ in range(steps):
        rows = torch.randint(len(x), (min(_MLP_BATCH, len(x)),), generator=generator)
        optimiser.zero_grad()
        loss = ((apply_mapping(params, x[rows]) - y[rows]) ** 2).sum(dim=1).mean()
        loss.backward()
        optimiser.step()
    return {k: v.detach().double() for k, v in params.items()}


def linear_mapping(
    source: torch.Tensor, target: torch.Tensor, *, intercept: bool
) -> dict[str, torch.Tensor]:
    """The closed-form ridge regression of ``target`` on ``source`` (both (m, f), m >= 1):
    ``{"w": (f, f), "b": (f,)}``, ``b`` zero without ``intercept`` (the intercept is not
    shrunk)."""
    f = source.shape[1]
    columns = [source, torch.ones(len(source), 1, dtype=source.dtype)] if intercept else [source]
    x = torch.cat(columns, dim=1)
    penalty = _RIDGE * torch.eye(x.shape[1], dtype=source.dtype)
    if intercept:
        penalty[f, f] = 0.0
    solution = torch.linalg.solve(x.T @ x + penalty, x.T @ target)
    b = solution[f] if intercept else torch.zeros(f, dtype=source.dtype)
    return {"w": solution[:f], "b": b}


def apply_mapping(params: dict[str, torch.Tensor], source: torch.Tensor) -> torch.Tensor:
    """(m, f) mapped factors of (m, f) source factors (linear when ``params`` has ``w``)."""
    if "w" in params:
        return source @ params["w"] + params["b"]
    return torch.tanh(source @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
