"""metarec-ridge: the closed-form inner loop (:mod:`metarec.meta.ridge`) as a method.

Fit, on the fold's training categories:

1. implicit's ALS gives item factors ``Y`` (the same fit as the ``als`` baseline's default);
   at launch every user's factors are the least-squares solve of their visible history against
   ``Y`` (ALS's user half-step);
2. episodes (``episodes="cross-fit"``): the training categories are dealt into two seeded
   halves, and each half's episodes see users through an ALS fitted on the other half only, as
   a launch sees them through one that never saw the new category (``"leave-out"``: the
   half-step without the episode's category, against the ``Y`` that saw it);
3. an episode is a training category, a shot count drawn from ``(0, *tasks.train_shots)``,
   the k-shot split of PROTOCOL.md §2 (each eligible user's first k positives by time), and up
   to ``query_users`` of its eligible users scored over every item of the category, with an
   NDCG@10-weighted pairwise loss (:func:`~metarec.meta.ridge.lambda_loss`; or ``"softmax"``);
4. Adam on the meta-parameters named in ``learn``, the fold's validation NDCG@10 checked every
   ``validate_every`` steps *and at step 0*, where the parameters are exactly ALS's fold-in:
   the best is kept, so on validation this method cannot end below fold-in with the same user
   factors. Each part of the model is chosen for the shot counts it serves. For launches with
   support, a start or checkpoint other than fold-in is taken only if its paired gain over
   fold-in on the validation users exceeds ``guard`` standard errors
   (:data:`GUARD_STANDARD_ERRORS`): validation scores one shot count (``tasks.shots``), where
   a learned prior's gain is often within the noise. A category with no support reads its
   own copy of the prior, the user map and the ridge strength
   (:data:`~metarec.meta.ridge.ZERO_SHOT_SET`) from the best validation score, unguarded:
   there the prior is what lifts the list, and on full ML-1M guarding it too cost 38% at
   0 shots (docs/BENCHMARKS.md, "The guard").

By default only the content prior ``P`` and the support bias ``b`` are learned: on the
validation categories of ML-100K and ML-1M, learning the user map or the ridge strengths through
the solve lowered validation NDCG@10 below fold-in's at 5 shots, with either loss (docs/META.md,
"metarec-ridge"). The prior is what fold-in lacks: an item with little or no support starts from
what its attributes and text say, not from zero; the bias lets popularity count where the
users' other categories say little. With a single training category the episodes are
``"leave-out"`` ones, since one category cannot be halved. A fold without validation categories
(Douban: music to book, one fixed fold) trains nothing: without a validation score no step can
be shown to beat fold-in, so fold-in with the zero prior is what launches, and each launch
chooses its support bias from its own support (held-out support users:
:func:`metarec.ranking.launch_bias.support_bias`; ``launch_bias=False`` keeps fold-in alone).

Launch: each item folded in from the support by the ridge solve, scores plus the popularity
tie-break of the ``als`` baseline.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from metarec.baselines.base import Family, FitContext, Launch, LaunchMemo, visible_history
from metarec.baselines.emcdr import linear_mapping, mapping_examples
from metarec.baselines.mf import (
    QUICK_ALS_ITERATIONS,
    als_model,
    fit_factors,
    positive_matrix,
)
from metarec.errors import NotAdaptedError
from metarec.evaluation.ridge_episodes import Episodes
from metarec.evaluation.stats import gain_in_standard_errors
from metarec.meta.model import MetaModel
from metarec.meta.ridge import ZERO_SHOT_SET, init_ridge
from metarec.meta.ridge_model import RidgeModel
from metarec.models.scorer import Params
from metarec.ranking.ridge import RidgeRanker, category_support

QUICK_STEPS = 60
BIAS_STARTS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0)
"""Support biases tried at step 0: ALS preferences are on a 0-1 scale and log(1 + n_j) on 0-7,
so these run from fold-in alone (0) to popularity first, fold-in breaking its ties (10)."""


ZERO_SHOT_CONTENT = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
"""Weights of the zero-shot content term tried on the zero-shot validation launches, after
meta-training: cosines are on 0-1 and a zero-shot dot product of prior vectors is far smaller
than fold-in's 0-1, so these run from the trained prior alone (0) to content-kNN's profile
ranking with the prior breaking its ties (100)."""

ZERO_SHOT_STEPS = 100
"""Adam steps on the zero-shot term's per-feature scale (validated every ``validate_every``)."""
ZERO_SHOT_LEARNING_RATE = 0.05  # the scale is a log: 0.05 a step moves a weight by 5%

GUARD_STANDARD_ERRORS = 2.0
"""The guard (``MetarecRidge(guard=...)``, the default): paired standard errors of validation
NDCG@10 a candidate must gain over fold-in to replace it where a launch has support, about a
one-sided 2% test."""


class MetarecRidge:
    """Ridge fold-in with meta-learned user map, content prior, support-dependent strength.

    Example:
        >>> method = MetarecRidge(steps=300)
        >>> method.fit(context)  # doctest: +SKIP
        >>> scores = method.scores(launch)  # (len(launch.users), n_items)  # doctest: +SKIP
    """

    name: ClassVar[str] = "metarec-ridge"
    family: ClassVar[Family] = "metarec"
    grid: ClassVar[list[dict[str, Any]]] = [
        {},
        {"factors": 64},
        {"learn": ("prior", "user_map")},
    ]  # no {"steps": 0}: every fit already scores fold-in (step 0) on validation

    def __init__(
        self,
        factors: int = 32,
        regularization: float = 30.0,
        alpha: float = 10.0,
        iterations: int = 15,
        steps: int = 200,
        learning_rate: float = 0.01,
        temperature: float = 0.1,
        query_users: int = 256,
        validate_every: int = 25,
        learn: tuple[str, ...] | None = ("prior", "support_bias"),
        episodes: str = "cross-fit",
        loss: str = "lambda",
        launch_bias: bool = True,
        guard: float = GUARD_STANDARD_ERRORS,
        mapped_start: bool = True,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.steps = steps
        self.learning_rate = learning_rate
        self.temperature = temperature
        self.query_users = query_users
        self.validate_every = validate_every
        self.learn = learn  # the meta-parameters trained (None: all of them)
        self.loss = loss  # "lambda" (NDCG-weighted pairs) or "softmax"
        self.episodes = episodes  # "cross-fit" or "leave-out" (see Episodes)
        self.launch_bias = launch_bias  # no validation: each launch picks its support bias
        # standard errors a validated change must gain over fold-in to be used where a launch
        # has support (-inf: off); zero shots keep the best validation score (see _consider)
        self.guard = guard
        # also start from EMCDR's linear map of the users' factors (_mapped_start)
        self.mapped_start = mapped_start
        self._mapped: Params | None = None  # that start's user map and ridge strength
        self._bias_from_support = False
        self._fold_in_users: np.ndarray | None = None  # fold-in's validation NDCG@10 per user
        self._last_gain_se = math.inf  # the last validated candidate's gain over fold-in
        self._last_users: np.ndarray | None = None  # and its validation values, user by user
        self._best: tuple[float, Params] | None = None  # the best validation score
        self._guarded: tuple[float, Params] | None = None  # the best that clears the guard
        self.item_factors: np.ndarray | None = None
        self.params: Params = {}
        self.history: list[dict[str, float]] = []  # (step, validation) of the trajectory
        self.zero_shot: list[dict[str, float]] = []  # the zero-shot weights tried
        self.chosen: dict[str, float] = {}  # what the fit chose on validation (tuning log)
        self.seed = 0
        self._cache: (
            tuple[tuple[object, ...], torch.Tensor, torch.Tensor, torch.Tensor | None] | None
        ) = None
        self._features: tuple[MetaModel, list[str]] | None = None  # the fold's, for model()
        self._launched = LaunchMemo()
        self._item_ids: list[str] = []

    # ---- fit ----------------------------------------------------------------------------------

    def fit(self, context: FitContext) -> None:
        catalog = context.catalog
        self.seed = context.seed
        matrix = positive_matrix(catalog.positives, len(catalog.users), len(catalog.items))
        iterations = QUICK_ALS_ITERATIONS if context.quick else self.iterations
        key = ("als-items", self.factors, self.regularization, self.alpha, iterations)
        if key not in context.memo:  # shared with other methods of the fold fitted the same way
            settings = (self.factors, self.regularization, self.alpha, iterations, context.seed)
            # built inside fit_factors' one-thread BLAS limit (implicit warns otherwise)
            context.memo[key] = fit_factors(lambda: als_model(*settings), matrix)[1]
        self.item_factors = context.memo[key]
        # without validation categories no training step can be checked; each launch then
        # chooses its support bias from its own support (ranking.launch_bias.support_bias)
        self._bias_from_support = self.launch_bias and context.validate is None
        self._item_ids = catalog.items["item_id"].astype(str).tolist()
        self._features = (context.features, list(context.train))
        self._cache = None
        self.history, self.zero_shot, self.chosen = [], [], {}
        self._mapped = None
        data = [c for c in context.train_data.values() if c.n_items > 1 and c.n_users > 1]
        content_dim = data[0].item_x.shape[1] if data else 0
        self.params = init_ridge(self.factors, content_dim, self.regularization, self.alpha)
        steps = min(self.steps, QUICK_STEPS) if context.quick else self.steps
        if steps == 0 or not data or context.validate is None:
            return  # without validation categories nothing says a step beats fold-in
        self._mapped = self._mapped_start(context, matrix, key) if self.mapped_start else None
        episodes = Episodes(context, data, matrix * self.alpha, self, steps)
        self._meta_train(episodes, steps, context)
        if context.validate_zero_users is not None:
            self._choose_zero_shot(context)
            if float(self.params["zero_shot_content"]) > 0:
                self._learn_zero_shot_scale(context, episodes, min(steps, ZERO_SHOT_STEPS))

    def _meta_train(self, episodes: Episodes, steps: int, context: FitContext) -> None:
        # the zero-shot term is chosen and learned on zero-shot validation after training
        zero_shot = {"zero_shot_content", "zero_shot_log_scale"}
        learn = (set(self.params) if self.learn is None else set(self.learn)) - zero_shot
        self._best = self._guarded = None
        start = self._best_start(context) if "support_bias" in learn else self.params
        params = {k: v.clone().requires_grad_(k in learn) for k, v in start.items()}
        # The loss's own score scale, learned beside the parameters: with a fixed scale a
        # pairwise loss is lowered by shrinking every score, which the ridge strength can do
        # item by item, and that changes the ranking for nothing.
        sharpness = torch.tensor(math.log(1.0 / self.temperature), dtype=torch.float64)
        sharpness.requires_grad_(True)
        optimiser = torch.optim.Adam(
            [v for k, v in params.items() if k in learn] + [sharpness], lr=self.learning_rate
        )
        if "support_bias" not in learn:  # else the starts were validated by _best_start
            score = self._validate(context, params, step=0, fold_in=True)
            self._consider(score, params, fold_in=True)
        for step in range(1, steps + 1):
            optimiser.zero_grad()
            loss = episodes.loss(params, sharpness)
            loss.backward()
            optimiser.step()
            if step % self.validate_every == 0 or step == steps:
                self._consider(self._validate(context, params, step=step), params)
        assert self._best is not None and self._guarded is not None  # fold-in was validated
        self.params = _with_zero_shot_set(self._guarded[1], self._best[1])
        self._cache = None

    def _best_start(self, context: FitContext) -> Params:
        """Fold-in plus each support bias of :data:`BIAS_STARTS`, the best on validation; with
        :attr:`mapped_start` also EMCDR's user map (:meth:`_mapped_start`) at bias 0 and at the
        best bias found from fold-in's users.

        The model contains popularity as well as fold-in: with a large bias the support counts
        order the list and the dot products only break their ties. A gradient from fold-in's
        start does not reach that end of the range within a few hundred steps, and where users'
        other categories say little (a small catalogue, a weak link between categories)
        popularity is the stronger start, so the start is chosen on validation first (the
        first is fold-in itself: the selected start cannot be below it on validation). The
        mapped starts go through the guard like every other candidate, and are candidates at
        all only with a paired gain of more than :attr:`guard` standard errors over the best
        start without the map (``gain_se_vs_start`` in the history): the map has f x f more
        parameters than a support bias, and a gain within the noise is no reason to take them.
        """
        best: tuple[float, float, np.ndarray | None] | None = None  # (score, bias, per user)
        for i, bias in enumerate(BIAS_STARTS):
            score = self._try_start(context, bias, {}, fold_in=i == 0)
            if best is None or score > best[0]:
                best = (score, bias, self._last_users)
        if self._mapped is not None and best is not None:
            for bias in sorted({0.0, best[1]}):
                self._try_start(context, bias, self._mapped, against=best[2])
        assert self._best is not None
        self.history.append({"step": 0, "validation_ndcg@10": self._best[0]})  # the start taken
        return self._best[1]

    def _try_start(
        self,
        context: FitContext,
        bias: float,
        update: Params,
        *,
        fold_in: bool = False,
        against: np.ndarray | None = None,
    ) -> float:
        """Validate a start: the current params with ``update`` and support bias ``bias``.

        With ``against`` (another start's validation values, user by user; a mapped start) it
        is a candidate only with a paired gain above :attr:`guard` standard errors over them.
        """
        params = {k: v.clone() for k, v in {**self.params, **update}.items()}
        params["support_bias"] = torch.tensor(bias, dtype=torch.float64)
        score = self._validate(context, params, step=0, fold_in=fold_in)
        entry = self.history[-1]
        entry["support_bias"] = bias
        if update:
            entry["mapped"] = 1.0
        if against is not None and self._last_users is not None:
            gain = gain_in_standard_errors(self._last_users, against)
            if math.isfinite(gain):
                entry["gain_se_vs_start"] = round(gain, 3)
            if not gain > self.guard:
                return score
        self._consider(score, params, fold_in=fold_in)
        return score

    def _mapped_start(
        self, context: FitContext, matrix: sp.csr_matrix, factors_key: tuple[Any, ...]
    ) -> Params | None:
        """EMCDR's linear map (:mod:`metarec.baselines.emcdr`) as a start: ``user_map`` the
        ridge regression of users' factors inside a training category on their factors from
        the rest (no intercept: a user without history stays at zero), and the ridge strength
        scaled by the map's gain on those factors (a map that only rescales the users then
        leaves the scores as they were). With it, at bias 0, this method is EMCDR's launch
        without the intercept, up to the strength's scale (EMCDR measures the gain on the
        launch's users, this on the examples); None without examples.
        """
        assert self.item_factors is not None
        key = ("emcdr-map", *factors_key)  # the item factors' own key: the same fit
        if key not in context.memo:
            source, target = mapping_examples(
                matrix * self.alpha,
                self.item_factors,
                context.catalog.item_category,
                list(context.train),
                self.regularization,
                context.seed,
            )
            context.memo[key] = (source, target)
        source, target = context.memo[key]
        if len(source) == 0 or not bool(source.any()):
            return None
        source = source.to(torch.float64)
        user_map = linear_mapping(source, target.to(torch.float64), intercept=False)["w"]
        gain = float((source @ user_map).square().sum() / source.square().sum())
        if not math.isfinite(gain) or gain <= 0.0:
            return None
        return {
            "user_map": user_map,
            "log_reg": torch.tensor(math.log(self.regularization * gain), dtype=torch.float64),
        }

    def _choose_zero_shot(self, context: FitContext) -> None:
        """The weight of :data:`ZERO_SHOT_CONTENT` with the best zero-shot validation NDCG@10
        (ties keep the smaller: the trained prior first, so the choice cannot be below it).

        Validation during training scores ``tasks.shots`` only, where the content term does
        not apply; a category with no support at all is ranked by the prior alone, which a
        linear map of item features cannot make personal. The weights are tried in
        :attr:`zero_shot` order, each entry ``{"zero_shot_content", "validation_ndcg@10"}``.
        """
        assert context.validate_zero_users is not None
        trained = self.params
        best: tuple[float, Params] | None = None
        for weight in ZERO_SHOT_CONTENT:
            params = {**trained, "zero_shot_content": torch.tensor(weight, dtype=torch.float64)}
            self.params = params
            per_user = np.asarray(context.validate_zero_users(self), dtype=np.float64)
            score = _defined_mean(per_user)
            self.zero_shot.append({"zero_shot_content": weight, "validation_ndcg@10": score})
            if best is None or score > best[0]:  # the first weight, 0: always a candidate
                best = (score, params)
        assert best is not None
        self.params = best[1]
        self.chosen = {
            "zero_shot_content": float(best[1]["zero_shot_content"]),
            "zero_shot_validation_ndcg@10": round(best[0], 6),
            "zero_shot_validation_without": round(self.zero_shot[0]["validation_ndcg@10"], 6),
        }

    def _learn_zero_shot_scale(self, context: FitContext, episodes: Episodes, steps: int) -> None:
        """Learn the zero-shot term's per-feature scale on zero-shot episodes of the training
        categories, validated on the zero-shot validation launches; the start (every scale
        one: the cosine :meth:`_choose_zero_shot` chose) is kept unless a checkpoint beats it.

        The cosine weighs every (IDF-weighted) feature alike; which features of a user's
        history say what they take in a new category (a genre, a decade, an author) is what
        the training categories can teach. Each entry of :attr:`zero_shot` from here on is
        ``{"step", "validation_ndcg@10"}``.
        """
        assert context.validate_zero_users is not None
        start = self._detached(self.params)
        best = (
            _defined_mean(np.asarray(context.validate_zero_users(self), dtype=np.float64)),
            start,
        )
        params = {k: v.clone().requires_grad_(k == "zero_shot_log_scale") for k, v in start.items()}
        sharpness = torch.tensor(math.log(1.0 / self.temperature), dtype=torch.float64)
        sharpness.requires_grad_(True)
        optimiser = torch.optim.Adam(
            [params["zero_shot_log_scale"], sharpness], lr=ZERO_SHOT_LEARNING_RATE
        )
        for step in range(1, steps + 1):
            optimiser.zero_grad()
            episodes.zero_shot_loss(params, sharpness).backward()
            optimiser.step()
            if step % self.validate_every == 0 or step == steps:
                self.params = self._detached(params)
                score = _defined_mean(
                    np.asarray(context.validate_zero_users(self), dtype=np.float64)
                )
                self.zero_shot.append({"step": step, "validation_ndcg@10": score})
                if score > best[0]:
                    best = (score, self.params)
        self.params = best[1]
        self.chosen["zero_shot_validation_ndcg@10"] = round(best[0], 6)
        self.chosen["zero_shot_scale_learned"] = best[1] is not start

    def _validate(
        self, context: FitContext, params: Params, *, step: int, fold_in: bool = False
    ) -> float:
        """Validation NDCG@10 of ``params``; with ``fold_in`` they are fold-in's, the reference
        of the guard. The history notes each candidate's paired gain over fold-in in standard
        errors (``gain_se``) where per-user values are available."""
        assert context.validate is not None  # fit() trains only with validation categories
        self.params = self._detached(params)
        entry: dict[str, float] = {"step": step}
        if context.validate_users is None:
            self._last_users = None
            score = float(context.validate(self))
            self._last_gain_se = math.inf  # nothing to pair: the guard cannot judge
        else:
            per_user = np.asarray(context.validate_users(self), dtype=np.float64)
            self._last_users = per_user
            score = _defined_mean(per_user)
            if fold_in:
                self._fold_in_users = per_user
            self._last_gain_se = gain_in_standard_errors(per_user, self._fold_in_users)
            if not fold_in and math.isfinite(self._last_gain_se):  # history goes into JSON
                entry["gain_se"] = round(self._last_gain_se, 3)
        entry["validation_ndcg@10"] = score
        self.history.append(entry)
        return score

    def _consider(self, score: float, params: Params, *, fold_in: bool = False) -> None:
        """Weigh the candidate just validated (``params``, validation NDCG@10 ``score``).

        It becomes the best (:attr:`_best`: what zero shots use, see :func:`_with_zero_shot_set`)
        with a higher score than the best so far, and the best for launches with support
        (:attr:`_guarded`) with a higher score than that one's *and* a paired gain over fold-in
        above :attr:`guard`; fold-in itself is always a candidate there. The guard keeps
        fold-in where validation at ``tasks.shots`` cannot tell a change from noise; the
        content prior's gain at zero shots is large where it lifts them (on full ML-1M a guard
        on every part cost 38% there, docs/BENCHMARKS.md "The guard"), so zero shots are not
        guarded.
        """

        def higher(best: tuple[float, Params] | None) -> bool:
            return best is None or bool(np.isnan(best[0]) or score > best[0])

        kept = None
        if higher(self._best):
            kept = self._detached(params)
            self._best = (score, kept)
        if fold_in or (self._last_gain_se > self.guard and higher(self._guarded)):
            self._guarded = (score, kept if kept is not None else self._detached(params))

    @staticmethod
    def _detached(params: Params) -> Params:
        return {k: v.detach().clone() for k, v in params.items()}

    # ---- launch -------------------------------------------------------------------------------

    def scores(self, launch: Launch) -> torch.Tensor:
        """(len(launch.users), n_items) ridge scores plus the popularity tie-break, from the
        ranker the service uses (:class:`~metarec.ranking.ridge.RidgeRanker`).

        Raises:
            NotAdaptedError: :meth:`fit` was not called.
        """
        if self.item_factors is None:
            raise NotAdaptedError(f"{self.name}: call fit(context) before scores(launch)")

        def launched() -> RidgeRanker:
            model = self.model()
            factors, gram, profiles = self._user_factors(launch, model)
            support = category_support(launch.catalog, launch.category, launch.split)
            return RidgeRanker.launch(
                model, launch.category, support, factors, gram, profiles=profiles
            )

        # one solve per launch, however many blocks of users the harness asks for
        ranker: RidgeRanker = self._launched.get(launch, self.params, launched)
        return ranker.scores(launch.users)

    def model(self) -> RidgeModel:
        """The fitted method as a servable model (what ``metarec train`` saves when it wins).

        Raises:
            NotAdaptedError: :meth:`fit` was not called.
        """
        if self.item_factors is None or self._features is None:
            raise NotAdaptedError(f"{self.name}: call fit(context) before scores(launch)")
        features, train = self._features
        return RidgeModel(
            config=features.config,
            encoder=features.encoder,
            params=self.params,
            item_factors=torch.from_numpy(self.item_factors),
            factor_item_ids=self._item_ids,
            regularization=self.regularization,
            alpha=self.alpha,
            splits={"train": list(train), "validation": [], "hold_out": []},
            history=list(self.history),
            zero_shot=list(self.zero_shot),
            bias_from_support=self._bias_from_support,
        )

    def _user_factors(
        self, launch: Launch, model: RidgeModel
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Every user's half-step factors from the launch's visible history, their gram, and
        (where the model reads them) their content profiles from the same history.

        The same for every launch over the same visible history (every shot count and category
        of a fold), so the last one is cached, keyed by a checksum of that history.
        """
        assert self.item_factors is not None
        key, history = visible_history(launch)
        if self._cache is None or self._cache[0] != key:
            factors, gram = model.user_factors(launch.catalog, history, self.item_factors)
            self._cache = (key, factors, gram, None)
        if model.uses_profiles and self._cache[3] is None:
            self._cache = (*self._cache[:3], model.user_profiles(launch.catalog, history))
        return self._cache[1], self._cache[2], self._cache[3]


def _with_zero_shot_set(supported: Params, zero_shot: Params) -> Params:
    """``supported``, plus the zero-shot copies of :data:`~metarec.meta.ridge.ZERO_SHOT_SET`
    from ``zero_shot`` where the two differ there (:func:`metarec.meta.ridge.for_counts` reads
    them for a category with no support)."""
    if all(torch.equal(supported[name], zero_shot[name]) for name in ZERO_SHOT_SET):
        return supported
    return {**supported, **{f"zero_shot.{name}": zero_shot[name] for name in ZERO_SHOT_SET}}


def _defined_mean(per_user: np.ndarray) -> float:
    """Mean over the users whose value is defined (NaN: none is)."""
    defined = np.isfinite(per_user)
    return float(per_user[defined].mean()) if defined.any() else math.nan
