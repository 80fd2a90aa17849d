"""The scorer over every item of a category, with each user folded into its first layer.

The scorer reads rows ``[z, p * z, s * z, scalars]`` (:func:`metarec.features.rows.pair_features`):
``z`` the item's representation, ``p`` the user's profile from other categories, ``s`` their
support profile here. For a fixed user the first layer is linear in the item's own features, so
the user folds into it once (``W_z + W_p * p + W_s * s``) and meets every item in one batched
matmul; only the scalars that mix user and item (two cosines and the collaborative affinity) are
formed per pair. No ``(users, items, 3D + 7)`` tensor is ever built.

This is the one implementation of ranking with the scorer: evaluation, the library, the CLI and
the service all score candidates through :func:`folded_scores` (the service through
:meth:`FoldedLayer.h1` on a short list, and :meth:`FoldedLayer.as_linear` to retrieve it). Its
test reference is ``score(params, pair_features(...))``: the same sums in another order, equal up
to float rounding (``tests/models/test_folded.py``). A new input is one column of
:func:`~metarec.features.rows.pair_features` and one term here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.errors import ArtifactError
from metarec.features.rows import COSINE_EPS, SCALARS, input_dim, unit_rows
from metarec.models.scorer import Params, layer_count

_COLUMN = {name: i for i, name in enumerate(SCALARS)}


@dataclass(frozen=True)
class ItemSide:
    """What the first layer reads of a category's items.

    Attributes:
        z: (n, D) representations ``[attributes, mean supporter profile]``.
        pop: (n,) support counts.
        pop_max: () the category's largest support count.
        unit_sum: (n, r) sums of the supporters' unit collaborative profiles (the affinity's
            item side).
    """

    z: Tensor
    pop: Tensor
    pop_max: Tensor
    unit_sum: Tensor

    def take(self, items: Tensor) -> ItemSide:
        """The same for the items at positions ``items`` (m,)."""
        return ItemSide(self.z[items], self.pop[items], self.pop_max, self.unit_sum[items])

    @property
    def n(self) -> int:
        return self.z.shape[0]


@dataclass(frozen=True)
class UserSide:
    """What the first layer reads of b users.

    Attributes:
        profile: (b, D) mean representation of what each user liked in other categories.
        support: (b, D) mean representation of their support items here (zeros without).
        n_other: (b,) number of their positives elsewhere.
        n_support: (b,) number of their support items here.
        cf_dim: r, the collaborative part's width (the last r entries of a profile).
    """

    profile: Tensor
    support: Tensor
    n_other: Tensor
    n_support: Tensor
    cf_dim: int


@dataclass(frozen=True)
class FoldedLayer:
    """The scorer's first layer with b users folded in.

    Attributes:
        item: (b, h, D) ``W_z + W_p * p_u + W_s * s_u``: the weights of ``z`` per user.
        unit_profile, unit_support: (b, D) the users' profile and support profile at unit length.
        scalars: (h, N_SCALARS) the scalar inputs' weight columns.
        user_terms: (b, h) the bias plus every user-only term.
        cf_unit: (b, r) the users' collaborative profiles at unit length.
    """

    item: Tensor
    unit_profile: Tensor
    unit_support: Tensor
    scalars: Tensor
    user_terms: Tensor
    cf_unit: Tensor

    def column(self, name: str) -> Tensor:
        """(h,) the weights of scalar input ``name``."""
        return self.scalars[:, _COLUMN[name]]

    def affinity(self, items: ItemSide) -> Tensor:
        """(b, n) ``asinh`` of each user's summed cosine to each item's supporters."""
        return torch.asinh(self.cf_unit @ items.unit_sum.T)

    def h1(self, items: ItemSide) -> Tensor:
        """(b, n, h) first-layer pre-activations of every (user, item) pair."""
        z = items.z
        h1 = torch.einsum("bhd,nd->bnh", self.item, z)
        z_unit = z / z.norm(dim=1).clamp_min(COSINE_EPS)[:, None]
        cos_p = self.unit_profile @ z_unit.T  # (b, n)
        cos_s = self.unit_support @ z_unit.T
        item_terms = torch.outer(torch.log1p(items.pop), self.column("log_pop")) + torch.outer(
            items.pop / items.pop_max.clamp_min(1.0), self.column("pop_share")
        )  # (n, h)
        affinity = self.affinity(items)
        if torch.is_grad_enabled() and any(
            t.requires_grad for t in (self.item, self.scalars, self.user_terms, z)
        ):
            return (
                h1
                + cos_p[..., None] * self.column("cos_profile")
                + cos_s[..., None] * self.column("cos_support")
                + affinity[..., None] * self.column("affinity")
                + item_terms[None]
                + self.user_terms[:, None]
            )
        # Scoring without gradients (every item for many users): the same sums in the same
        # order, in place, so the result is bit-identical and no new (b, n, h) sum is
        # allocated per term (1.8x faster on this step, one core; out= would not vmap).
        # The einsum's (b, n, h) result is a view of a (b, h, n) product: each term is added
        # through that layout, so the loops walk memory in order (another 1.5 to 2x on this
        # step); every element still gets the same products added in the same order.
        by_unit = h1.transpose(1, 2)  # (b, h, n), the same storage
        by_unit += cos_p[:, None, :] * self.column("cos_profile")[:, None]
        by_unit += cos_s[:, None, :] * self.column("cos_support")[:, None]
        by_unit += affinity[:, None, :] * self.column("affinity")[:, None]
        by_unit += item_terms.T[None]
        by_unit += self.user_terms[..., None]
        return h1

    def h1_own(self, items: ItemSide) -> Tensor:
        """(b, s, h) :meth:`h1` of each of b users with *their own* s items (``items``
        holds b x s rows, user by user), where the reference pairs every user with every item.

        The same terms as the reference, each formed per (user, own item) by a batched product.
        """
        b = self.item.shape[0]
        z = items.z.view(b, -1, items.z.shape[1])  # (b, s, D)
        h1 = torch.bmm(z, self.item.transpose(1, 2))  # (b, s, h)
        z_unit = z / z.norm(dim=2).clamp_min(COSINE_EPS)[..., None]
        cos_p = torch.bmm(z_unit, self.unit_profile[:, :, None])[..., 0]  # (b, s)
        cos_s = torch.bmm(z_unit, self.unit_support[:, :, None])[..., 0]
        unit_sum = items.unit_sum.view(b, -1, items.unit_sum.shape[1])  # (b, s, r)
        affinity = torch.asinh(torch.bmm(unit_sum, self.cf_unit[:, :, None])[..., 0])
        item_terms = torch.outer(torch.log1p(items.pop), self.column("log_pop")) + torch.outer(
            items.pop / items.pop_max.clamp_min(1.0), self.column("pop_share")
        )  # (b s, h)
        return (
            h1
            + cos_p[..., None] * self.column("cos_profile")
            + cos_s[..., None] * self.column("cos_support")
            + affinity[..., None] * self.column("affinity")
            + item_terms.view(b, -1, item_terms.shape[1])
            + self.user_terms[:, None]
        )

    def as_linear(self) -> tuple[Tensor, Tensor]:
        """The same layer as an affine map of the item's linear features.

        ``phi_i = [z_i, z_i / |z_i|, log1p(pop_i), pop_i / pop_max]`` (:func:`linear_features`):
        ``h1 = phi @ weight[u].T + bias[u] + affinity * column("affinity")`` equals :meth:`h1`.

        Returns:
            weight (b, h, 2D + 2) and bias (b, h).
        """
        unit = (
            self.column("cos_profile")[None, :, None] * self.unit_profile[:, None, :]
            + self.column("cos_support")[None, :, None] * self.unit_support[:, None, :]
        )
        b = self.item.shape[0]
        pop = torch.stack([self.column("log_pop"), self.column("pop_share")], dim=1)
        return torch.cat([self.item, unit, pop.expand(b, -1, -1)], dim=2), self.user_terms


def linear_features(items: ItemSide) -> Tensor:
    """(n, 2D + 2) ``[z, z / |z|, log1p(pop), pop / pop_max]``: what :meth:`FoldedLayer.as_linear`
    maps."""
    z = items.z
    unit = z / z.norm(dim=1, keepdim=True).clamp_min(COSINE_EPS)
    pop = items.pop
    return torch.cat(
        [z, unit, torch.log1p(pop)[:, None], (pop / items.pop_max.clamp_min(1.0))[:, None]], dim=1
    )


def fold_users(params: Params, users: UserSide) -> FoldedLayer:
    """Fold b users into the first layer.

    Raises:
        ArtifactError: the params do not read rows of this feature width (a model trained on
            other features).
    """
    weight, bias = params["layers.0.weight"], params["layers.0.bias"]  # (h, 3D + 7), (h,)
    d = users.profile.shape[1]
    if weight.shape[-1] != input_dim(d):
        raise ArtifactError(
            f"the model's first layer reads {weight.shape[-1]} inputs, but these items give "
            f"{input_dim(d)}; the model was trained on other features: retrain it"
        )
    profile, support = users.profile, users.support
    item = (
        weight[None, :, :d]
        + weight[None, :, d : 2 * d] * profile[:, None, :]
        + weight[None, :, 2 * d : 3 * d] * support[:, None, :]
    )  # (b, h, D)
    scalars = weight[:, 3 * d :]
    user_terms = (
        torch.outer(torch.log1p(users.n_other), scalars[:, _COLUMN["log_n_other"]])
        + torch.outer(torch.log1p(users.n_support), scalars[:, _COLUMN["log_n_support"]])
        + bias
    )  # (b, h)
    return FoldedLayer(
        item=item,
        unit_profile=profile / profile.norm(dim=1).clamp_min(COSINE_EPS)[:, None],
        unit_support=support / support.norm(dim=1).clamp_min(COSINE_EPS)[:, None],
        scalars=scalars,
        user_terms=user_terms,
        cf_unit=unit_rows(profile[:, d - users.cf_dim :]),
    )


def head(params: Params, h1: Tensor) -> Tensor:
    """The scorer after its first layer: ``(..., h)`` pre-activations to ``(...)`` scores."""
    out = h1
    for i in range(1, layer_count(params)):
        out = F.linear(torch.relu(out), params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
    return out.squeeze(-1)


def folded_scores(params: Params, users: UserSide, items: ItemSide) -> Tensor:
    """``score(params, pair_features(...))`` of every (user, item) pair: (b, n) scores."""
    return head(params, fold_users(params, users).h1(items))


def head_gradient(params: Params, h1: Tensor) -> Tensor:
    """Mean gradient of the score with respect to the first layer's pre-activation.

    The head is ``ReLU -> Linear -> ... -> Linear``; its gradient is backpropagated by hand (the
    ReLU masks times the weights), several times cheaper per request than autograd.

    Args:
        h1: (m, h) first-layer pre-activations of some rows, or (b, m, h): b users' rows at
            once (the same operations batched; the service's batches).

    Returns:
        (h,) the mean gradient over the m rows, or (b, h).
    """
    n_layers = layer_count(params)
    if n_layers == 1:  # no hidden layer: the score is h1 itself
        return torch.ones(*h1.shape[:-2], h1.shape[-1])
    pre = [h1]
    hidden = F.relu(h1)
    for i in range(1, n_layers - 1):
        pre.append(F.linear(hidden, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]))
        hidden = F.relu(pre[-1])
    delta = params[f"layers.{n_layers - 1}.weight"].expand(*h1.shape[:-1], -1)
    for i in range(n_layers - 2, -1, -1):
        delta = delta * (pre[i] > 0)
        if i > 0:
            delta = delta @ params[f"layers.{i}.weight"]
    return delta.mean(dim=-2)
