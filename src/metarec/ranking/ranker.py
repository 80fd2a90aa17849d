"""One category under one meta-model: adapt, score every item, rank a user's top-K.

:class:`CategoryRanker` is the single path from a category's support to ranked items. The
benchmark scores launches with :meth:`CategoryRanker.scores`; the library, the CLI and the HTTP
service rank one user with :meth:`CategoryRanker.top_k`. Adaptation runs the learner's inner loop
(:meth:`metarec.meta.MAML.adapt`, the same code meta-training differentiates), and scoring runs
the folded scorer (:mod:`metarec.models.folded`), so training, evaluation and serving cannot
drift apart.

Adaptation, by the model's task kind (``tasks.kind``):

- ``"category"``: the start params (the meta-initialisation, conditioned on the category for a
  category-conditioned model) adapt once on the whole support of the category;
- ``"user"`` (users as tasks, MeLU's formulation): each user adapts the start params on their own
  support when they are ranked (batched with ``vmap`` over users in :meth:`scores`).

Zero inner steps, or ``adapt=False``, ranks with the start params as they are ("zero-shot").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metarec.meta.model import MetaModel
from metarec.models.folded import UserSide, folded_scores
from metarec.models.scorer import Params
from metarec.ranking.inputs import UserInputs, item_side, user_side
from metarec.ranking.retrieval import ItemIndex, Projection, retrieve_top_k
from metarec.seeds import derived_seed
from metarec.tasks import (
    Batch,
    CategoryData,
    Split,
    SupportState,
    stack_batches,
    support_batch,
    support_state,
)

_SCORE_CHUNK_VALUES = 1 << 21
"""First-layer values ``(users, items, hidden)`` of one scoring chunk (8 MiB of float32).

Small enough that each chunk's temporaries stay under glibc's largest mmap threshold (32 MiB),
so they come from the heap and are reused chunk after chunk: a larger temporary is mapped
afresh and page-faulted in on every call, which cost more than the arithmetic (chunks of 2M
pairs x 64 units, 488 MiB each, ran 2.4x slower; docs/BENCHMARKS.md "Fourth pass")."""


@dataclass(frozen=True)
class CategoryRanker:
    """A category, its support, and the params that rank it.

    Attributes:
        model: the meta-model.
        category: the category's data (its positives are what the launch has seen).
        split: which of those positives are support.
        state: the support summarised (:func:`metarec.tasks.support_state`).
        params: the category's params: adapted on the support, or the start params.
        per_user: users-as-tasks: each user adapts ``params`` on their own support first.
        adapted: whether ``params`` were adapted to this category (False: zero-shot).
        support_used: the support positives the category's inner loop trained on (a sample
            where ``launch`` had ``max_positives`` below the support), else every one (the
            features read them all): what a served adaptation reports as its support size.
    """

    model: MetaModel
    category: CategoryData
    split: Split
    state: SupportState
    params: Params
    per_user: bool
    adapted: bool
    support_used: int

    @classmethod
    def launch(
        cls,
        model: MetaModel,
        category: CategoryData,
        split: Split,
        *,
        adapt: bool = True,
        params: Params | None = None,
        state: SupportState | None = None,
        max_positives: int | None = None,
    ) -> CategoryRanker:
        """Adapt ``model`` to the category's support (PROTOCOL.md's launch) and rank with it.

        Args:
            model: the meta-model.
            category: the category.
            split: which positives are support.
            adapt: False ranks with the start params (zero inner steps).
            params: the category's params when they are already known (an adaptation read
                back from disk, or the start params of a category not adapted yet): no
                category-level inner loop runs (users-as-tasks models still adapt per user).
            state: ``support_state(category, split)`` when the caller already has it.
            max_positives: adapt on at most this many support positives, a seeded uniform
                sample (the service bounds an adaptation's memory so); None: every one (the
                protocol's launch, as the benchmark runs it).
        """
        state = support_state(category, split) if state is None else state
        adapting = adapt and model.config.meta.inner_steps > 0
        per_user = adapting and model.config.tasks.kind == "user"
        n_support = int(split.support.sum())
        if params is not None:
            return cls(
                model,
                category,
                split,
                state,
                params,
                per_user,
                adapted=True,
                support_used=n_support,
            )
        start = model.start_params(category)
        if not adapting or per_user:
            return cls(
                model,
                category,
                split,
                state,
                start,
                per_user,
                adapted=per_user,
                support_used=n_support,
            )
        support = support_batch(
            category,
            state,
            split,
            n_negatives=model.config.tasks.negatives,
            generator=_generator(model, category.name),
            max_positives=max_positives,
        )
        fitted = {k: v.detach() for k, v in model.learner.adapt(start, support).items()}
        used = int(support.y.sum())  # its positive rows (label 1; the negatives are 0)
        return cls(model, category, split, state, fitted, per_user, adapted=True, support_used=used)

    # ---- every item, for many users (evaluation) -----------------------------------------------

    def scores(self, users: np.ndarray) -> Tensor:
        """Scores of every item for ``users`` (b,) positions in the category: (b, n_items).

        Exact and complete (the benchmark's full ranking); the caller excludes what it must.
        """
        hidden = self.params["layers.0.weight"].shape[-2]
        chunk = max(1, _SCORE_CHUNK_VALUES // max(1, self.category.n_items * hidden))
        if self.per_user:
            generator = _generator(self.model, self.category.name)
            parts = [
                self._per_user_scores(users[i : i + chunk], generator)
                for i in range(0, len(users), chunk)
            ]
        else:
            items = item_side(self.category, self.state)
            with torch.no_grad():
                parts = [
                    folded_scores(
                        self.params,
                        user_side(self.category, self.state, users[i : i + chunk]),
                        items,
                    )
                    for i in range(0, len(users), chunk)
                ]
        return torch.cat(parts) if parts else torch.zeros((0, self.category.n_items))

    def _per_user_scores(self, users: np.ndarray, generator: torch.Generator) -> Tensor:
        """Users-as-tasks: adapt once per user on their own support, all users at once (vmap)."""
        adapted = self.adapt_users(users, generator)
        items = item_side(self.category, self.state)

        def rank_one(params: Params, user: Tensor) -> Tensor:
            return folded_scores(params, self._users(user[None]), items)[0]

        with torch.no_grad():  # each user's own params meet only their own folded first layer
            return torch.func.vmap(rank_one)(adapted, torch.as_tensor(users, dtype=torch.long))

    def _users(self, positions: np.ndarray | Tensor) -> UserSide:
        return user_side(self.category, self.state, positions)

    def adapt_users(self, users: np.ndarray, generator: torch.Generator) -> Params:
        """Each user's params adapted on their own support, stacked: ``(b, ...)`` entries."""
        supports = [self._user_support(int(user), generator) for user in users]
        stacked = stack_batches(supports)
        learner, start = self.model.learner, self.params

        def adapt_one(x: Tensor, y: Tensor, mask: Tensor) -> Params:
            return learner.adapt(start, Batch(x, y, mask))

        adapted = torch.func.vmap(adapt_one)(stacked.x, stacked.y, stacked.mask)
        return {k: v.detach() for k, v in adapted.items()}

    def _user_support(self, user: int, generator: torch.Generator) -> Batch:
        split = self.split
        mine = split.support & (self.category.pos_user == user)
        return support_batch(
            self.category,
            self.state,
            Split(mine, split.query, split.eligible, None),
            n_negatives=self.model.config.tasks.negatives,
            generator=generator,
        )

    # ---- one user's top-K (library, CLI, service) ----------------------------------------------

    def user_params(self, user: UserInputs) -> Params:
        """The params that rank ``user``: the category's, or for users-as-tasks their own."""
        if not self.per_user or user.position is None:
            return self.params
        key = f"{self.category.name}:{int(self.category.users[user.position])}"
        adapted = self.adapt_users(np.array([user.position]), _generator(self.model, key))
        return {k: v[0] for k, v in adapted.items()}

    def top_k(
        self,
        user: UserInputs,
        k: int,
        *,
        index: ItemIndex | None = None,
        projection: Projection | None = None,
        short_list: int,
    ) -> tuple[Tensor, Tensor]:
        """The user's top-``k`` item positions and their scores, best first; ``user.seen`` items
        are never returned (see :func:`metarec.ranking.retrieval.retrieve_top_k`)."""
        return retrieve_top_k(
            self.user_params(user),
            self.category,
            self.state,
            index,
            projection,
            user,
            k,
            short_list=short_list,
        )


def _generator(model: MetaModel, key: str) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(model.config.seed, key))


def category_scores(
    model: MetaModel,
    category: CategoryData,
    split: Split,
    users: np.ndarray,
    *,
    adapt: bool = True,
) -> Tensor:
    """Scores of every item of ``category`` for ``users`` (b,) positions, after adapting on
    ``split``'s support: ``CategoryRanker.launch(...).scores(users)``, (b, n_items)."""
    return CategoryRanker.launch(model, category, split, adapt=adapt).scores(users)
