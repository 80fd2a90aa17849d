"""Fast top-K for one user in one category: a dot product over every item, then the exact MLP.

Scoring every item with the MLP costs ``n_items x d_in x hidden`` per request (about 40 s and
10 GB at 1e6 items); a dot product over a precomputed item matrix costs ``n_items x (k + 2)``.
The second is exact enough to pick a *short list*, and the first is cheap on a short list, so a
request does both (DESIGN.md, "Serving").

Why a dot product can rank for the MLP. The scorer's input for user ``u`` and item ``i`` is
``[z_i, p_u * z_i, s_u * z_i, scalars]`` (:func:`metarec.features.rows.pair_features`): ``z_i``
the item's representation, ``p_u`` the user's profile from other categories, ``s_u`` their
support profile here, and six scalars of which four depend on the item: ``log1p(pop_i)``,
``pop_i / pop_max``, ``cos(p_u, z_i)`` and ``cos(s_u, z_i)``. For a fixed user the first layer is
therefore *exactly* linear in the item's linear features

    phi_i = [z_i, z_i / |z_i|, log1p(pop_i), pop_i / pop_max]        (2D + 2 wide)

namely ``h1_i = M_u phi_i + c_u``. The rest of the network is piecewise linear (ReLU); we
linearise it around the category's *reference items* (its most popular ones, where top lists
live): ``g_u`` is the mean gradient of the score with respect to ``h1`` over those rows, and items
are ranked by ``phi_i . q_u`` with ``q_u = M_u^T g_u``. The exact MLP then re-ranks the best
``short_list`` items. On a 20,000-item category of the demo model, recall@10 of a 300-item short
list against the exact full ranking was 1.0 over 200 users (docs/SERVING.md has the numbers at
1e4 to 1e6 items).

The attribute part ``[z, z / |z|]`` is projected onto its top ``rank`` right singular vectors (an
SVD over the category's items, computed once per category and support state) so that a request
reads ``n_items x (rank + 2)`` floats; the two popularity columns are kept exactly, because most
items have no support and a plain SVD would drop the few that do.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.errors import ArtifactError
from metarec.features.rows import N_SCALARS, pair_features
from metarec.meta import Params
from metarec.models.scorer import score
from metarec.tasks import CategoryData, SupportState

DEFAULT_RANK = 32
DEFAULT_REFERENCE_ITEMS = 256
_CHUNK_ROWS = 65_536  # items per chunk while building an index: bounds the temporary memory
_EPS = 1e-6  # the eps of pair_features' cosine similarities


@dataclass(frozen=True)
class UserInputs:
    """What the scorer knows about one user in one category.

    Attributes:
        profile: (D,) mean representation of what the user liked in other categories.
        n_other: () number of those positives.
        support_sum: (D,) sum of the representations of the user's support items here.
        support_n: () number of those items.
        seen: (m,) int64 positions of the items the user already liked here (never recommended).
    """

    profile: Tensor
    n_other: Tensor
    support_sum: Tensor
    support_n: Tensor
    seen: Tensor

    @property
    def support_profile(self) -> Tensor:
        """(D,) mean of the user's support items here (zeros without any)."""
        return self.support_sum / self.support_n.clamp_min(1.0)


@dataclass(frozen=True)
class ItemIndex:
    """One category's retrieval matrix, built from its items and support state (not from params).

    Attributes:
        vectors: (n_items, rank + 2) float32, contiguous: ``[phi_attr @ basis, log1p(pop),
            pop / pop_max]`` per item.
        basis: (2D, rank) orthonormal columns spanning the kept part of ``[z, z / |z|]``.
        reference: (m,) positions of the reference items the head is linearised at.
        energy: share of the attribute part's squared norm that the projection keeps (1.0 when
            ``rank`` covers the whole span, so the dot product is exact before linearisation).
        fingerprint: what the index was built from (items and support positives), to reuse it
            while neither changes.
    """

    vectors: Tensor
    basis: Tensor
    reference: Tensor
    energy: float
    fingerprint: str

    @property
    def rank(self) -> int:
        return self.basis.shape[1]


def category_fingerprint(category: CategoryData) -> str:
    """A key that changes whenever the category's items or support positives change."""
    digest = 0
    for array in (category.item_idx, category.users, category.pos_user, category.pos_item):
        digest = zlib.crc32(np.ascontiguousarray(array).tobytes(), digest)
    return f"{category.name}:{category.n_items}:{len(category.pos_item)}:{digest:08x}"


def linear_features(category: CategoryData, state: SupportState, items: Tensor) -> Tensor:
    """The features the first layer is linear in, for some items of a category.

    Args:
        items: (m,) item positions.

    Returns:
        (m, 2D + 2) rows ``[z, z / |z|, log1p(pop), pop / pop_max]``.
    """
    z = state.item_repr(category, items)
    unit = z / z.norm(dim=1, keepdim=True).clamp_min(_EPS)
    pop = state.pop[items]
    return torch.cat(
        [z, unit, torch.log1p(pop)[:, None], (pop / state.pop_max.clamp_min(1.0))[:, None]], dim=1
    )


def build_index(
    category: CategoryData,
    state: SupportState,
    *,
    rank: int = DEFAULT_RANK,
    n_reference: int = DEFAULT_REFERENCE_ITEMS,
    seed: int = 0,
) -> ItemIndex:
    """Build a category's retrieval matrix (two passes over its items, in chunks).

    Args:
        category: the category's items and positives.
        state: its support state (popularity, supporter profiles).
        rank: width of the projected attribute part; the span is kept whole when it is narrower.
        n_reference: reference items to linearise at: the most popular, then random ones.
        seed: seed of the random reference items and of popularity ties.

    Returns:
        The index.
    """
    n = category.n_items
    width = 2 * category.profile.shape[1]
    gram = torch.zeros(width, width, dtype=torch.float64)
    for start in range(0, n, _CHUNK_ROWS):
        attrs = linear_features(category, state, torch.arange(start, min(n, start + _CHUNK_ROWS)))
        attrs = attrs[:, :width].double()
        gram += attrs.T @ attrs
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(1)
    total = float(eigenvalues.sum())
    # directions with (numerically) no energy carry no item information: drop them
    useful = int((eigenvalues > max(total, 1e-30) * 1e-9).sum())
    keep = max(1, min(rank, useful))
    basis = eigenvectors[:, :keep].float().contiguous()
    vectors = torch.empty(n, keep + 2)
    for start in range(0, n, _CHUNK_ROWS):
        stop = min(n, start + _CHUNK_ROWS)
        phi = linear_features(category, state, torch.arange(start, stop))
        vectors[start:stop, :keep] = phi[:, :width] @ basis
        vectors[start:stop, keep:] = phi[:, width:]
    generator = torch.Generator().manual_seed(seed)
    # popularity first; the random jitter (< 1) only orders ties, e.g. the many unsupported items
    jittered = state.pop + torch.rand(n, generator=generator)
    reference = torch.topk(jittered, min(n, n_reference)).indices
    energy = float(eigenvalues[:keep].sum()) / total if total > 0 else 1.0
    return ItemIndex(
        vectors=vectors.contiguous(),
        basis=basis,
        reference=reference,
        energy=energy,
        fingerprint=category_fingerprint(category),
    )


def head_gradient(params: Params, h1: Tensor) -> Tensor:
    """Mean gradient of the score with respect to the first layer's pre-activation.

    The head is ``ReLU -> Linear -> ... -> Linear``; its gradient is backpropagated by hand (the
    ReLU masks times the weights), which is several times cheaper per request than autograd.

    Args:
        params: scorer parameters (``layers.{i}.weight`` / ``.bias``).
        h1: (m, h) first-layer pre-activations of the reference rows.

    Returns:
        (h,) the mean gradient over the m rows.
    """
    n_layers = len(params) // 2
    if n_layers == 1:  # no hidden layer: the score is h1 itself
        return torch.ones(h1.shape[1])
    pre = [h1]
    hidden = F.relu(h1)
    for i in range(1, n_layers - 1):
        pre.append(F.linear(hidden, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]))
        hidden = F.relu(pre[-1])
    delta = params[f"layers.{n_layers - 1}.weight"].expand(h1.shape[0], -1)
    for i in range(n_layers - 2, -1, -1):
        delta = delta * (pre[i] > 0)
        if i > 0:
            delta = delta @ params[f"layers.{i}.weight"]
    return delta.mean(dim=0)


def _user_rows(
    category: CategoryData, state: SupportState, user: UserInputs, items: Tensor
) -> Tensor:
    """(m, d_in) exact scorer rows of ``items`` for ``user`` (the same as candidate_rows_for)."""
    return pair_features(
        state.item_repr(category, items),
        user.profile,
        user.support_profile,
        state.pop[items],
        state.pop_max,
        user.n_other,
        user.support_n,
    )


def query_vector(
    params: Params,
    category: CategoryData,
    state: SupportState,
    index: ItemIndex,
    user: UserInputs,
) -> Tensor:
    """The user's query in the index's space: ``index.vectors @ query`` ranks the items.

    Returns:
        (rank + 2,) query.

    Raises:
        ArtifactError: the params do not read rows of this feature width.
    """
    d = category.profile.shape[1]
    weight, bias = params["layers.0.weight"], params["layers.0.bias"]
    if weight.shape[1] != 3 * d + N_SCALARS:
        raise ArtifactError(
            f"the model's first layer reads {weight.shape[1]} inputs, but this store's items give "
            f"{3 * d + N_SCALARS}; the model was trained on other features: retrain it"
        )
    rows = _user_rows(category, state, user, index.reference)
    g = head_gradient(params, F.linear(rows, weight, bias))
    w_item, w_profile, w_support = weight[:, :d], weight[:, d : 2 * d], weight[:, 2 * d : 3 * d]
    w_scalars = weight[:, 3 * d :].T @ g  # (N_SCALARS,): log1p(pop), pop share, cos p, cos s
    profile, support = user.profile, user.support_profile
    q_item = w_item.T @ g + profile * (w_profile.T @ g) + support * (w_support.T @ g)
    q_unit = w_scalars[2] * _unit(profile) + w_scalars[3] * _unit(support)
    q_attr = torch.cat([q_item, q_unit]) @ index.basis
    return torch.cat([q_attr, w_scalars[:2]])


def _unit(vector: Tensor) -> Tensor:
    return vector / vector.norm().clamp_min(_EPS)


def rank_top_k(
    params: Params,
    category: CategoryData,
    state: SupportState,
    index: ItemIndex | None,
    user: UserInputs,
    k: int,
    *,
    short_list: int,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` items for one user: dot-product retrieval, then the exact MLP on a short list.

    When the category has no more than ``short_list`` candidates (or no index), every candidate
    is scored exactly, so the result equals a full ranking.

    Args:
        params: scorer parameters (adapted, or the meta-initialisation).
        category, state: the category and its support state.
        index: its retrieval index (None: score every item exactly).
        user: the user's inputs; ``user.seen`` items are never returned.
        k: how many items (fewer when the category has fewer candidates).
        short_list: how many retrieved items the exact MLP re-ranks (at least ``k``).

    Returns:
        positions (k',) of the items, best first, and their exact scores (k',).
    """
    n = category.n_items
    allowed = torch.ones(n, dtype=torch.bool)
    allowed[user.seen] = False
    n_allowed = int(allowed.sum())
    k = min(k, n_allowed)
    if k <= 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    with torch.no_grad():
        if index is None or n_allowed <= max(short_list, k):
            candidates = torch.nonzero(allowed).squeeze(1)
        else:
            query = query_vector(params, category, state, index, user)
            approx = index.vectors @ query
            approx[user.seen] = -torch.inf
            candidates = torch.topk(approx, max(short_list, k)).indices
        exact = score(params, _user_rows(category, state, user, candidates))
        top = torch.topk(exact, k)
    return candidates[top.indices], top.values


def recall_at_k(retrieved: Tensor, exact_top: Tensor) -> float:
    """Share of ``exact_top`` (the exact full ranking's top-k) found in ``retrieved``."""
    if len(exact_top) == 0:
        return 1.0
    found = torch.isin(exact_top, retrieved)
    return float(found.float().mean())
