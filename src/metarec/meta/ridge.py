"""A differentiable closed-form inner loop: each new item's vector is a ridge solve.

For a new category, item ``j``'s vector is the confidence-weighted least-squares fit of the users
who took it (preference 1, confidence ``alpha * weight``) against every other user (preference
0, confidence 1), shrunk toward a prior mean ``g_j`` predicted from the item's content::

    v_j = (G + sum_{u in S_j} (c_uj - 1) x_u x_u^T + lambda_j I)^-1
          (sum_{u in S_j} c_uj x_u + lambda_j g_j)

with user vectors ``x_u = f_u A`` (``f_u``: the users' collaborative factors from the other
categories, ``A`` a learned map), ``G = X^T X`` over every user, ``g_j = z_j P`` (``z_j``: the
item's attribute and text features) and a ridge strength that depends on the item's support
size, ``log lambda_j = log lambda_0 + s log(1 + n_j)``. A user's score for the item is
``x_u . v_j + b log(1 + n_j)``, plus, for a category with no support at all (zero shots),
``c_0 sum_k a_k u_k w_k``: with ``u``, ``w`` the user's profile ``p_u`` (what they liked
elsewhere) and the item's features ``z_j``, IDF-weighted and at unit length
(:mod:`metarec.features.affinity`), and a learned per-feature scale ``a = exp(log a)`` (ones:
the cosine, the ``content-knn`` baseline's zero-shot score). With no support every item sits at
its prior, and a linear prior ``z_j P`` cannot express a cosine to each user's own taste;
``c_0`` large makes the zero-shot list content-kNN's, ties broken by the prior.

With ``A = I``, ``P = 0``, ``s = b = c_0 = 0`` and ALS's ``lambda`` and ``alpha`` this *is* the
least-squares fold-in of implicit's ALS (Hu et al. 2008; :func:`metarec.baselines.mf.solve_rows`),
so a model selected on validation from a trajectory that starts there cannot end below fold-in
on validation. The meta-parameters are trained through the solve on episodes of the training
categories with a listwise loss over each category's items (Bertinetto et al., "Meta-learning
with differentiable closed-form solvers", ICLR 2019; Lee et al., "Meta-Learning with
Differentiable Convex Optimization", CVPR 2019).

Example:
    >>> params = init_ridge(factors=32, content_dim=40, regularization=30.0, alpha=10.0)
    >>> vectors = fold_in(params, user_factors, support, item_content)  # doctest: +SKIP
    >>> rows = user_factors[users]  # doctest: +SKIP
    >>> scores = ridge_scores(params, rows, vectors, support.counts)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metarec.features.affinity import ContentIndex
from metarec.models.scorer import Params

_PAIR_CHUNK = 8192  # support pairs per outer-product chunk (bounds the (chunk, f, f) tensor)


@dataclass(frozen=True)
class RidgeSupport:
    """A category's support as the solve reads it.

    Attributes:
        users: (n_sup,) rows of the user-factor matrix, one per support positive.
        items: (n_sup,) item positions in the category.
        weights: (n_sup,) feedback weights.
        n_items: items in the category.
    """

    users: Tensor
    items: Tensor
    weights: Tensor
    n_items: int

    @classmethod
    def empty(cls, n_items: int) -> RidgeSupport:
        """No support at all (zero shots: every item at its prior)."""
        none = torch.zeros(0, dtype=torch.long)
        return cls(none, none, torch.zeros(0, dtype=torch.float64), n_items)

    @property
    def counts(self) -> Tensor:
        """(n_items,) support positives per item."""
        return torch.bincount(self.items, minlength=self.n_items).to(torch.float64)


def init_ridge(factors: int, content_dim: int, regularization: float, alpha: float) -> Params:
    """Meta-parameters at the fold-in special case (identity map, zero prior, ALS's settings)."""
    f64 = torch.float64
    return {
        "user_map": torch.eye(factors, dtype=f64),
        "prior": torch.zeros((content_dim, factors), dtype=f64),
        "log_reg": torch.tensor(math.log(regularization), dtype=f64),
        "reg_slope": torch.zeros((), dtype=f64),
        "log_alpha": torch.tensor(math.log(alpha), dtype=f64),
        "support_bias": torch.zeros((), dtype=f64),
        "zero_shot_content": torch.zeros((), dtype=f64),
        "zero_shot_log_scale": torch.zeros((content_dim,), dtype=f64),
    }


ZERO_SHOT_SET = ("user_map", "prior", "log_reg")
"""What a category with no support at all reads of the meta-parameters besides the zero-shot
term (with no support the ridge strength's slope, the confidence and the support bias do
nothing). A model may keep its own copy of them for zero shots, ``zero_shot.<name>``, chosen on
validation apart from what a launch with support uses (the guard of
:class:`~metarec.evaluation.ridge.MetarecRidge`); :func:`for_counts` picks the set."""


def for_counts(params: Params, counts: Tensor) -> Params:
    """The meta-parameters a category with these support ``counts`` (n_items,) is solved and
    scored with: the zero-shot copies of :data:`ZERO_SHOT_SET` where it has no support at all
    and the model keeps them, ``params`` as they are otherwise."""
    if bool(counts.any()) or f"zero_shot.{ZERO_SHOT_SET[0]}" not in params:
        return params
    return {**params, **{name: params[f"zero_shot.{name}"] for name in ZERO_SHOT_SET}}


def user_vectors(params: Params, factors: Tensor) -> Tensor:
    """(n, f) ``x_u = f_u A``."""
    return factors.to(torch.float64) @ params["user_map"]


def fold_in(
    params: Params,
    factors: Tensor,
    support: RidgeSupport,
    item_content: Tensor,
    *,
    gram: Tensor | None = None,
) -> Tensor:
    """(n_items, f) each item's ridge solution given the support (the inner loop, closed form).

    Only the items with support have systems of their own: every other item's is ``G +
    lambda_0 I`` (its ridge strength at zero support), one matrix solved once for all of their
    priors. So memory and time follow the support, not the catalogue: one ``(f, f)`` system per
    item would be 8 GB of float64 at 1e6 items and f = 32 (and three such tensors at once).

    Args:
        params: meta-parameters (:func:`init_ridge`).
        factors: (n_users, r) collaborative factors of every user (zero rows: no history).
        support: the category's support positives.
        item_content: (n_items, content_dim) item features for the prior mean.
        gram: (r, r) ``F^T F`` when it is precomputed (it does not depend on the category).
    """
    f64 = torch.float64
    counts = support.counts
    params = for_counts(params, counts)
    a = params["user_map"]
    raw_gram = factors.to(f64).T @ factors.to(f64) if gram is None else gram.to(f64)
    g = a.T @ raw_gram @ a
    f = g.shape[0]
    reg = torch.exp(params["log_reg"] + params["reg_slope"] * torch.log1p(counts))  # (n_items,)
    prior = item_content.to(f64) @ params["prior"]
    eye = torch.eye(f, dtype=f64)
    has_support = counts > 0
    supported = torch.nonzero(has_support).squeeze(1)  # (m,) sorted item positions
    unsupported = torch.nonzero(~has_support).squeeze(1)
    vectors = prior.new_zeros((support.n_items, f))
    if len(supported):
        row = torch.searchsorted(supported, support.items.contiguous())  # each pair's system
        confidence = torch.exp(params["log_alpha"]) * support.weights.to(f64)
        x = user_vectors(params, factors[support.users])  # (n_sup, f)
        extra = g.new_zeros((len(supported), f, f))
        for start in range(0, len(x), _PAIR_CHUNK):
            xs = x[start : start + _PAIR_CHUNK]
            cs = (confidence[start : start + _PAIR_CHUNK] - 1.0)[:, None, None]
            # in place: an out-of-place add copied the whole (m, f, f) sum per chunk (330 MB
            # at 40,000 supported items); the same sums, and autograd's gradient of the
            # source does not read ``extra``
            extra.index_add_(
                0, row[start : start + _PAIR_CHUNK], cs * xs[:, :, None] * xs[:, None, :]
            )
        rhs = x.new_zeros((len(supported), f)).index_add(0, row, confidence[:, None] * x)
        reg_s = reg[supported]
        system = g + extra + reg_s[:, None, None] * eye
        solved = torch.linalg.solve(system, rhs + reg_s[:, None] * prior[supported])
        vectors = vectors.index_copy(0, supported, solved)
    if len(unsupported):
        reg_0 = reg[unsupported[0]]  # every unsupported item's: counts 0
        solved = torch.linalg.solve(g + reg_0 * eye, (reg_0 * prior[unsupported]).T).T
        vectors = vectors.index_copy(0, unsupported, solved)
    return vectors


def zero_shot_affinity(params: Params, index: ContentIndex, profiles: Tensor) -> Tensor:
    """(b, n_items) the zero-shot content term's affinity of profiles (b, d) to the category's
    items (``index``), each feature scaled by ``exp(zero_shot_log_scale)`` (absent: ones)."""
    log_scale = params.get("zero_shot_log_scale")
    return index.affinity(profiles, None if log_scale is None else torch.exp(log_scale))


def has_zero_shot_term(params: Params) -> bool:
    """Whether the model has a zero-shot content term (a non-zero ``c_0``)."""
    weight = params.get("zero_shot_content")  # absent from models saved before the term
    return weight is not None and bool(weight != 0)


def uses_content(params: Params, counts: Tensor) -> bool:
    """Whether :func:`ridge_scores` of a category with these support ``counts`` reads the
    content affinity (a zero-shot category under a non-zero ``c_0``)."""
    return has_zero_shot_term(params) and not bool(counts.any())


def ridge_scores(
    params: Params,
    factors: Tensor,
    vectors: Tensor,
    counts: Tensor,
    affinity: Tensor | None = None,
) -> Tensor:
    """(b, n_items) ``x_u . v_j + b log(1 + n_j)`` for the given users' factors (b, r), plus
    ``c_0 affinity`` where :func:`uses_content` (``affinity``: (b, n_items) the users' content
    affinity to the items, required then); with no support, the zero-shot set where the model
    keeps one (:func:`for_counts`)."""
    params = for_counts(params, counts)
    scores = user_vectors(params, factors) @ vectors.T + params["support_bias"] * torch.log1p(
        counts
    )
    if uses_content(params, counts):
        if affinity is None:
            raise ValueError("a zero-shot category under a content weight needs the affinity")
        scores = scores + params["zero_shot_content"] * affinity.to(scores.dtype)
    return scores


def listwise_loss(scores: Tensor, relevant: Tensor, exclude: Tensor, temperature: float) -> Tensor:
    """Mean over users of the mean, over their relevant items, of a softmax cross-entropy of
    that item against the user's *non-relevant* candidates only.

    ``softplus(logsumexp(negatives) - positive)``: each relevant item must beat the items the
    user did not take, not the user's other relevant items (a softmax over every relevant item
    at once would ask for a flat score among them, and rewards flat lists, not top-heavy ones).
    Each user's own support items (``exclude``) are not candidates, as in evaluation.
    """
    logits = scores / temperature
    negatives = torch.logsumexp(logits.masked_fill(relevant | exclude, float("-inf")), dim=1)
    per_pair = torch.nn.functional.softplus(negatives[:, None] - logits)
    per_user = per_pair.masked_fill(~relevant, 0.0).sum(1) / relevant.sum(1).clamp(min=1)
    return per_user[relevant.any(1)].mean()


def _top_discount(arranged: Tensor, shuffle: Tensor, cutoff: int) -> Tensor:
    """(b, n) ``1 / log2(1 + rank)`` for the items ranked in the top ``cutoff``, 0 elsewhere:
    the ranks a stable descending sort of ``arranged`` (scores in the shuffled order
    ``shuffle``) gives, without sorting all n. The top ``cutoff`` are the items above the
    ``cutoff``-th largest score and, of those equal to it, the first ones in ``arranged``; only
    they are sorted. No NaN in ``arranged``.
    """
    b, n = arranged.shape
    threshold = torch.topk(arranged, cutoff, dim=1).values[:, -1:]
    above = arranged > threshold
    tied = arranged == threshold
    slots = cutoff - above.sum(1, keepdim=True)
    taken = above | (tied & (tied.cumsum(1) <= slots))  # exactly `cutoff` a row
    positions = torch.nonzero(taken)[:, 1].view(b, cutoff)  # ascending: the arranged order
    by_score = torch.argsort(arranged.gather(1, positions), dim=1, descending=True, stable=True)
    order = shuffle.gather(1, positions.gather(1, by_score))  # items, best first
    places = torch.arange(1, cutoff + 1, device=arranged.device).to(arranged.dtype)
    discount = torch.zeros((b, n), dtype=arranged.dtype, device=arranged.device)
    return discount.scatter_(1, order, (1.0 / torch.log2(1.0 + places)).expand(b, cutoff))


def lambda_loss(
    scores: Tensor,
    relevant: Tensor,
    exclude: Tensor,
    temperature: float,
    negatives: int = 50,
    cutoff: int | None = 10,
    generator: torch.Generator | None = None,
) -> Tensor:
    """LambdaRank-weighted pairwise loss (Burges 2010; Wang et al., LambdaLoss, CIKM 2018).

    Each (relevant item, highly ranked non-relevant item) pair costs
    ``|delta NDCG| * softplus((s_neg - s_pos) / temperature)``, with ``delta NDCG`` the change of
    the user's NDCG if the two swapped places in the current ranking. A list is judged where
    NDCG looks, at its top: a softmax over every item rewards lifting the mass of a user's many
    relevant items, which can cost the few that reach the top ten. The non-relevant items are
    the user's ``negatives`` highest-scored ones (every swap that can change the top); with
    ``cutoff`` the NDCG is NDCG@cutoff, so only swaps across or inside the top count. Tied
    scores (every item, at a start where no item has a vector) are ranked in a random order
    drawn from ``generator``: ranked by position they would weight the pairs by item index.
    """
    b, n = scores.shape
    with torch.no_grad():
        ranked = scores.masked_fill(exclude, float("-inf"))
        shuffle = torch.argsort(torch.rand(scores.shape, generator=generator), dim=1)
        arranged = ranked.gather(1, shuffle)  # ties of a stable sort of this: the random order
        if cutoff is not None and cutoff < n and not bool(arranged.isnan().any()):
            discount = _top_discount(arranged, shuffle, cutoff)
        else:
            by_score = torch.argsort(arranged, dim=1, descending=True, stable=True)
            order = shuffle.gather(1, by_score)  # by score, ties in the random order
            rank = torch.empty_like(order).scatter_(
                1, order, torch.arange(1, n + 1, device=scores.device).expand(b, n).contiguous()
            )
            discount = 1.0 / torch.log2(1.0 + rank.to(scores.dtype))
            if cutoff is not None:  # NDCG@cutoff: only places in the top change it
                discount = discount * (rank <= cutoff)
        n_relevant = relevant.sum(1)
        ideal = torch.cumsum(1.0 / torch.log2(torch.arange(2, n + 2, dtype=scores.dtype)), 0)
        top = n_relevant if cutoff is None else n_relevant.clamp(max=cutoff)
        idcg = ideal[(top - 1).clamp(min=0)]
        m = min(negatives, n)
        negative_index = torch.topk(
            scores.masked_fill(relevant | exclude, float("-inf")), m, dim=1
        ).indices
        width = int(n_relevant.max())
        positive_index = torch.topk(relevant.to(torch.int8), max(width, 1), dim=1).indices
        positive_valid = torch.gather(relevant, 1, positive_index)
        negative_valid = ~torch.gather(relevant | exclude, 1, negative_index)
        weight = (
            torch.gather(discount, 1, positive_index)[:, :, None]
            - torch.gather(discount, 1, negative_index)[:, None, :]
        ).abs() / idcg[:, None, None]
        weight = weight * (positive_valid[:, :, None] & negative_valid[:, None, :])
    s_pos = torch.gather(scores, 1, positive_index)[:, :, None]
    s_neg = torch.gather(scores, 1, negative_index)[:, None, :]
    pairs = weight * torch.nn.functional.softplus((s_neg - s_pos) / temperature)
    users = relevant.any(1)
    return pairs.sum((1, 2))[users].mean()
