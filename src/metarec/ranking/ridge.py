"""One category under a ridge model: fold the support in, score every item, rank top-K.

:class:`RidgeRanker` is metarec-ridge's single path from a category's support to ranked items,
as :class:`~metarec.ranking.CategoryRanker` is the MLP models': the benchmark's
:class:`~metarec.evaluation.ridge.MetarecRidge` scores launches with :meth:`RidgeRanker.scores`,
and the library, the CLI and the service rank users with :meth:`RidgeRanker.top_k_many`.

Adapting is the closed-form solve (:func:`metarec.meta.ridge.fold_in`): each item's vector from
its supporters, shrunk toward the prior its content predicts. Its result, the category's
``params``, is two tensors: ``item_vectors`` (n_items, f) and ``counts`` (n_items,) support
positives per item. Zero-shot (``adapt=False``) solves with an empty support: every item at its
prior. Scores are ``x_u . v_j + b log(1 + n_j)`` (and, with no support at all, the model's
zero-shot content term over the users' ``profiles``) plus the popularity tie-break every
fold-in method uses (:func:`metarec.ranking.popularity.tie_broken`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from metarec.data.catalog import Catalog
from metarec.errors import ConfigError
from metarec.features.affinity import ContentIndex
from metarec.meta.ridge import (
    RidgeSupport,
    fold_in,
    for_counts,
    ridge_scores,
    user_vectors,
    uses_content,
    zero_shot_affinity,
)
from metarec.meta.ridge_model import RidgeModel
from metarec.models.scorer import Params
from metarec.ranking.launch_bias import support_bias
from metarec.ranking.popularity import plus_rounded, tie_break
from metarec.tasks import CategoryData, Split


@dataclass(frozen=True)
class RidgeRanker:
    """A category, the users' factors, and the item vectors that rank it.

    Attributes:
        model: the ridge model.
        category: the category's data.
        factors: (n_store_users, f) every user's factors from their history outside it.
        params: ``item_vectors`` and ``counts`` (see the module docstring).
        adapted: whether ``params`` were solved from a support (False: zero-shot).
        support_used: the support positives the solve read (all of the launch's; 0 at zero
            shots): what a served adaptation reports as its support size, as
            :class:`~metarec.ranking.CategoryRanker` does.
        profiles: (n_store_users, d) every user's content profile from the same history
            (``model.user_profiles``); read only where the scores use the content term.
        content: the category's items for that term (None where the scores do not use it).
    """

    model: RidgeModel
    category: CategoryData
    factors: Tensor
    params: Params
    adapted: bool
    support_used: int = 0
    profiles: Tensor | None = None
    content: ContentIndex | None = None

    @classmethod
    def launch(
        cls,
        model: RidgeModel,
        category: CategoryData,
        support: RidgeSupport,
        factors: Tensor,
        gram: Tensor,
        *,
        adapt: bool = True,
        params: Params | None = None,
        profiles: Tensor | None = None,
    ) -> RidgeRanker:
        """Solve the category's item vectors from ``support`` (or take ``params`` as solved).

        Args:
            model: the ridge model.
            category: the category.
            support: its support positives (:func:`category_support`).
            factors, gram: every user's factors and their gram (``model.user_factors``).
            adapt: False solves with no support at all (zero-shot: each item at its prior).
            params: the category's solved params when already known (read back from disk).
            profiles: every user's content profile (``model.user_profiles``); required where
                the model has a zero-shot content term (``model.uses_profiles``).

        Raises:
            ConfigError: the scores need ``profiles`` and none were given.
        """
        adapted = params is not None or adapt
        if params is None:
            if not adapt:
                support = RidgeSupport.empty(category.n_items)
            with torch.no_grad():
                vectors = fold_in(model.params, factors, support, category.item_x, gram=gram)
            params = {"item_vectors": vectors, "counts": support.counts}
            if adapt and model.bias_from_support:
                params["support_bias"] = support_bias(model, category, support, factors, gram)
        content = None
        if uses_content(model.params, params["counts"]):
            if profiles is None:
                raise ConfigError(
                    "this model's zero-shot scores need every user's content profile: pass "
                    "profiles=model.user_profiles(catalog, history) to RidgeRanker.launch"
                )
            content = ContentIndex(category.item_x, model.space.dense_columns())
        return cls(model, category, factors, params, adapted, len(support.users), profiles, content)

    def scores(self, users: np.ndarray) -> Tensor:
        """(b, n_items) float32 scores of every item for store users ``users`` (b,): the
        float32 rounding of :meth:`scores64`."""
        return plus_rounded(self._dots(users), self._items.tie)

    def scores64(self, users: np.ndarray) -> Tensor:
        """:meth:`scores` before their rounding to float32: lists are ordered by these, so
        that the popularity tie-break (a millionth of a score) still orders items whose
        float32 scores are equal."""
        return self._dots(users).double() + self._items.tie

    def _dots(self, users: np.ndarray) -> Tensor:
        """(b, n_items) scores before the popularity tie-break (float64 where a float64 term,
        such as the support bias, entered the sum)."""
        index = torch.as_tensor(users, dtype=torch.long)
        meta = self._meta
        if self.content is not None:
            assert self.profiles is not None  # launch() requires them with a content index
            affinity = zero_shot_affinity(meta, self.content, self.profiles[index])
            with torch.no_grad():
                return ridge_scores(
                    meta,
                    self.factors[index],
                    self.params["item_vectors"],
                    self.params["counts"],
                    affinity,
                )
        # ridge_scores' sums in its order, with the item-only terms computed once per ranker
        vectors = self._user_vectors(index)
        with torch.no_grad():
            return vectors @ self.params["item_vectors"].T + self._items.bias

    def top_k_many(
        self, users: np.ndarray, seen: list[Tensor], ks: list[int]
    ) -> list[tuple[Tensor, Tensor]]:
        """Each user's top-``k`` item positions and float32 scores, best first (by
        :meth:`scores64`), never a ``seen`` item.

        Exact over every item (a ridge score is one dot product per item, so no retrieval
        short list is needed). In a large category the exact scores are computed for a few
        candidates per user only: those whose low-precision score (:class:`CoarseItems`) is
        within twice its proven error bound of the user's k-th best; every item of the exact
        top-k is among them, so the lists are the exact ones.
        """
        if len(users) == 0:
            return []
        per_pass = max(1, PASS_SCORES // self.category.n_items)
        if len(users) > per_pass:  # bounded memory for any number of users (metarec batch)
            return [
                found
                for start in range(0, len(users), per_pass)
                for found in self.top_k_many(
                    users[start : start + per_pass],
                    seen[start : start + per_pass],
                    ks[start : start + per_pass],
                )
            ]
        k = min(max(ks), self.category.n_items)
        coarse = self._coarse
        # a deep list leaves few blocks out: nothing to gain over scoring every item
        if coarse is not None and k <= coarse.n_blocks // 4:
            vectors = self._user_vectors(torch.as_tensor(users, dtype=torch.long))
            if coarse.bounds(vectors):
                return self._top_k_bounded(vectors, coarse, seen, ks)
        scores = self.scores64(users)
        _mask_seen(scores, seen)
        top = torch.topk(scores, k, dim=1)
        out = []
        for positions, values, k_user in zip(top.indices, top.values, ks, strict=True):
            allowed = values != -torch.inf  # seen items; a NaN stays, to be reported
            out.append((positions[allowed][:k_user], values[allowed][:k_user].float()))
        return out

    def _top_k_bounded(
        self, vectors: Tensor, coarse: CoarseItems, seen: list[Tensor], ks: list[int]
    ) -> list[tuple[Tensor, Tensor]]:
        """Exact top-``k`` of each user (vectors (b, f)) among the candidates that the coarse
        scores and their error bound cannot rule out."""
        k = max(ks)
        approx = coarse.scores(vectors)  # (b, n_blocks, BLOCK) float32, -inf past the last item
        flat = approx.view(len(vectors), -1)
        _mask_seen(flat, seen)
        maxima = approx.amax(dim=2)  # (b, n_blocks)
        # the k-th largest block maximum is at most the k-th largest score (k blocks reach it),
        # so every item of the exact top-k has a coarse score >= it - 2 bounds; rounded down
        # to float32 so the comparison cannot drop one
        lowest = torch.topk(maxima, k, dim=1).values[:, -1].double()
        floor = (lowest - 2.0 * coarse.error_bound(vectors)).float()
        floor = torch.nextafter(floor, torch.full_like(floor, -torch.inf))
        rows, blocks = torch.nonzero(maxima >= floor[:, None], as_tuple=True)
        values = approx[rows, blocks]  # (m, BLOCK): the blocks that hold a candidate
        inside = (values >= floor[rows, None]) & (values > -torch.inf)  # never a seen item
        rows = rows[:, None].expand(-1, BLOCK)[inside]
        items = (blocks[:, None] * BLOCK + torch.arange(BLOCK))[inside]
        exact = (vectors[rows] * self.params["item_vectors"][items]).sum(1) + self._items.bias[
            items
        ]
        exact = exact + self._items.tie[items]  # float64, as scores64
        # candidates come row by row, each row's in ascending position: sorted by score, then
        # (stably) by row, each row's list is best first, equal scores the lower position first
        order = torch.sort(exact, descending=True, stable=True).indices
        order = order[torch.sort(rows[order], stable=True).indices]
        items, exact = items[order], exact[order].float()
        ends = torch.bincount(rows, minlength=len(vectors)).cumsum(0).tolist()
        return [
            (items[start : min(end, start + k_user)], exact[start : min(end, start + k_user)])
            for start, end, k_user in zip([0, *ends[:-1]], ends, ks, strict=True)
        ]

    @cached_property
    def _meta(self) -> Params:
        """The meta-parameters this category is scored with (its launch's support bias)."""
        meta = for_counts(self.model.params, self.params["counts"])
        if "support_bias" in self.params:  # chosen at this launch (see support_bias)
            meta = {**meta, "support_bias": self.params["support_bias"]}
        return meta

    @cached_property
    def _items(self) -> ItemTerms:
        """The item-only terms of the scores, computed once (the ranker is immutable)."""
        counts = self.params["counts"]
        with torch.no_grad():
            bias = self._meta["support_bias"] * torch.log1p(counts)
        tie = tie_break(counts, seed=self.model.config.seed, key=self.category.name)
        return ItemTerms(bias, tie)

    @cached_property
    def _coarse(self) -> CoarseItems | None:
        """The coarse copy the top-k reads first, where the category ranks through one (built
        on the first list: evaluation, which scores every item, never builds it)."""
        if self.content is not None or self.category.n_items < COARSE_MIN_ITEMS:
            return None
        items = self._items
        return CoarseItems.build(self.params["item_vectors"], (items.bias + items.tie).float())

    def _user_vectors(self, index: Tensor) -> Tensor:
        with torch.no_grad():
            return user_vectors(self._meta, self.factors[index])


PASS_SCORES = 4_000_000
"""(users x items) scores a top-k call holds at once (16 MB in float32, twice that in float64):
more users are ranked in passes, with the same lists."""

COARSE_MIN_ITEMS = 8192
"""Categories from this size on rank through :class:`CoarseItems` (below, scoring every item
exactly costs less than the candidates' bookkeeping)."""


@dataclass(frozen=True)
class ItemTerms:
    """A ranker's item-only score terms: ``bias`` (n,) ``b log(1 + n_j)`` and ``tie`` (n,) the
    popularity tie-break, both float64."""

    bias: Tensor
    tie: Tensor


@dataclass(frozen=True)
class CoarseItems:
    """A low-precision copy of a category's item side, with a proven bound on its error.

    A user's coarse score of item j, ``(x_u . v_j)`` in ``dtype`` (float32 accumulation) plus
    the item terms in float32, differs from the exact float32 score by at most
    ``eps |x_u| max_j |v_j| + 2^-20 (|x_u| max_j |v_j| + max_j |o_j|)``: rounding the inputs to
    ``dtype`` (unit roundoff u) moves each product by at most ``(2u + u^2) |x_ui v_ji|``, the
    float32 sum and the output rounding add ``(r + 2) 2^-24`` and ``u`` of ``sum_i |x_ui v_ji|``,
    which is at most ``|x_u| |v_j|`` (Cauchy-Schwarz); ``eps`` is twice the sum of these
    factors, and the last term covers the float32 rounding of the additions and of the exact
    score. bfloat16 halves the bytes read per user against float32, on CPUs that multiply it
    natively (AVX512-BF16); elsewhere float32.
    """

    vectors: Tensor  # (n_blocks * BLOCK, f) in dtype, zero rows past the last item
    offsets: Tensor  # (n_blocks * BLOCK,) float32: bias + tie, -inf past the last item
    vector_norm: float  # max_j |v_j|
    offset_max: float  # max_j |o_j|
    eps: float

    @classmethod
    def build(cls, vectors: Tensor, offsets: Tensor) -> CoarseItems | None:
        """The coarse copy of item vectors (n, f) and offsets (n,), or None where the bound
        would not hold (non-finite or huge values: those keep the exact path, which reports
        them)."""
        norms = vectors.double().norm(dim=1)
        if not (bool(norms.isfinite().all()) and bool(offsets.isfinite().all())):
            return None
        vector_norm, offset_max = float(norms.max()), float(offsets.abs().max())
        if vector_norm > _LARGEST or offset_max > _LARGEST:
            return None
        dtype = torch.bfloat16 if _native_bfloat16() else torch.float32
        roundoff = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-24
        n, f = vectors.shape
        eps = 2.0 * (3.0 * roundoff + roundoff**2 + (f + 2) * 2.0**-24)
        padded = -(-n // BLOCK) * BLOCK
        stored = torch.zeros((padded, f), dtype=dtype)
        stored[:n] = vectors.to(dtype)
        ends = torch.full((padded,), -torch.inf)
        ends[:n] = offsets.float()
        return cls(stored, ends, vector_norm, offset_max, eps)

    @property
    def n_blocks(self) -> int:
        return self.vectors.shape[0] // BLOCK

    def bounds(self, users: Tensor) -> bool:
        """Whether the bound holds for these user vectors (b, f): finite and small enough
        that no coarse product overflows."""
        norms = users.norm(dim=1)
        return bool(norms.isfinite().all()) and float(norms.max()) * self.vector_norm < _LARGEST

    def scores(self, users: Tensor) -> Tensor:
        """(b, n_blocks, BLOCK) float32 coarse scores of users (b, f), item by item (-inf past
        the last item)."""
        product = (users.to(self.vectors.dtype) @ self.vectors.T).float()
        return product.add_(self.offsets).view(len(users), self.n_blocks, BLOCK)

    def error_bound(self, users: Tensor) -> Tensor:
        """(b,) float64: the most a coarse score of each user can differ from the exact one."""
        reach = users.double().norm(dim=1) * self.vector_norm
        return self.eps * reach + 2.0**-20 * (reach + self.offset_max)


BLOCK = 128
"""Items per block of :class:`CoarseItems`: the coarse pass keeps each block's maximum, and
only blocks whose maximum reaches a user's floor are read again."""
_LARGEST = 1e30  # norms above this could overflow float32 products: the exact path then


def _native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (else bfloat16 products are emulated and
    slower than float32)."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private: absent is "no"
    return bool(check()) if check is not None else False


def _mask_seen(scores: Tensor, seen: list[Tensor]) -> None:
    """Set each user's ``seen`` items (row i: ``seen[i]``) to -inf, in place."""
    rows = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(seen)])
    scores[rows, torch.cat(seen).long()] = -torch.inf


def category_support(catalog: Catalog, category: CategoryData, split: Split) -> RidgeSupport:
    """The split's support positives of ``category`` as the solve reads them, with each
    positive's feedback weight from ``catalog``."""
    positives = catalog.positives_in([category.name])
    n_items = len(catalog.items)
    codes = positives["user_idx"].to_numpy() * n_items + positives["item_idx"].to_numpy()
    order = np.argsort(codes, kind="stable")
    users = category.users[category.pos_user[split.support]]
    items = category.pos_item[split.support]
    found = np.searchsorted(codes[order], users * n_items + category.item_idx[items])
    weights = positives["weight"].to_numpy(dtype=np.float64)[order][found]
    return RidgeSupport(
        users=torch.as_tensor(users, dtype=torch.long),
        items=torch.as_tensor(items, dtype=torch.long),
        weights=torch.as_tensor(weights),
        n_items=category.n_items,
    )
