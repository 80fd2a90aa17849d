"""A batch's short lists as the first layer reads them: the tested twin of
``FoldedLayer.h1_own`` for b users with their own items (:func:`short_list_h1`), and the
items laid out for it (:class:`ItemRows`): the columns most items use as a dense block, the
others (one-hot attributes) as each item's nonzeros in a padded table. A category's
attributes are laid out once (:func:`attribute_layout`, kept in the retrieval index), and a
short list gathers its rows (:func:`short_list_rows`). ``tests/ranking/test_retrieval_batched.py``
checks them against the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.features.rows import COSINE_EPS
from metarec.models.folded import FoldedLayer, ItemSide
from metarec.tasks import CategoryData, SupportState

CHUNK_ROWS = 65_536  # items per chunk over a category: bounds the temporary memory
# A column of the items' representations is multiplied densely when at least this share of the
# items has it nonzero, and as a sparse column otherwise (one-hot attributes: 2.6% on average).
DENSE_COLUMN = 0.25


def chunks(n: int) -> list[slice]:
    """Slices of ``n`` items, ``CHUNK_ROWS`` at a time."""
    return [slice(start, min(n, start + CHUNK_ROWS)) for start in range(0, n, CHUNK_ROWS)]


@dataclass(frozen=True)
class ItemRows:
    """Items' representations ``z`` as :func:`short_list_h1` reads them: the columns most of
    them use (the collaborative part, numeric fields) as a dense block, the others (one-hot
    attributes) as each item's nonzeros in a padded table, and what the scalars need.

    Attributes:
        dense_columns: (c,) the columns of ``z`` in ``dense``.
        dense: (u, c) their values.
        column: (u, w) each item's other nonzero columns (padding: column 0, with value 0).
        value: (u, w) their values.
        norm: (u,) ``|z|`` clamped at the cosines' eps.
        pop, pop_max, unit_sum: as :class:`~metarec.models.folded.ItemSide`.
    """

    dense_columns: Tensor
    dense: Tensor
    column: Tensor
    value: Tensor
    norm: Tensor
    pop: Tensor
    pop_max: Tensor
    unit_sum: Tensor


@dataclass(frozen=True)
class AttributeLayout:
    """A category's static attributes (``category.item_x``, the first ``d`` columns of ``z``)
    laid out once for every item, so a short list gathers its rows instead of finding each
    item's nonzeros per request.

    Attributes:
        dense_columns: (c,) the attribute columns nonzero for at least a quarter of the items.
        dense: (n, c) their values, contiguous: a short list's rows are one row gather (a
            gather of ``x[items][:, columns]`` took 73 of 350 us at 8 x 300 items of 1e5).
        column, value: (n, w) each item's nonzeros in the other attribute columns, padded.
        square_norm: (n,) each item's ``|x|^2``.
    """

    dense_columns: Tensor
    dense: Tensor
    column: Tensor
    value: Tensor
    square_norm: Tensor


def _padded(rows: Tensor, columns: Tensor, values: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(n, w) tables of each row's (column, value) pairs, given row-major: padding 0 and 0."""
    count = torch.bincount(rows, minlength=n)
    width = int(count.max()) if len(rows) else 0
    slot = torch.arange(len(rows)) - (torch.cumsum(count, 0) - count)[rows]
    column = torch.zeros(n, width, dtype=torch.long)
    value = torch.zeros(n, width, dtype=values.dtype)
    column[rows, slot] = columns
    value[rows, slot] = values
    return column, value


def item_rows(items: ItemSide) -> ItemRows:
    """``items`` laid out for :func:`short_list_h1`, dense columns chosen among these items."""
    z = items.z
    n, d = z.shape
    nonzero = z != 0
    dense = nonzero.float().mean(dim=0) >= DENSE_COLUMN if n else torch.ones(d, dtype=torch.bool)
    columns = torch.nonzero(dense).squeeze(1)
    sparse = torch.nonzero(~dense).squeeze(1)
    rows, at = torch.nonzero(nonzero[:, sparse], as_tuple=True)  # row-major: item by item
    column, value = _padded(rows, sparse[at], z[rows, sparse[at]], n)
    return ItemRows(
        dense_columns=columns,
        dense=z[:, columns],
        column=column,
        value=value,
        norm=z.norm(dim=1).clamp_min(COSINE_EPS),
        pop=items.pop,
        pop_max=items.pop_max,
        unit_sum=items.unit_sum,
    )


def attribute_layout(x: Tensor) -> AttributeLayout:
    """Every item's attributes ``x`` (n, d) laid out once (:class:`AttributeLayout`).

    One pass over the items in chunks (a category of 1e6 items never holds its whole nonzero
    mask), in numpy: its ``flatnonzero`` of a chunk's mask found the nonzeros of 1e6 x 190
    attributes in 0.17 s, where torch's comparison and ``nonzero`` took 2 s.
    """
    n, d = x.shape
    table = x.detach().contiguous().numpy()
    rows, columns = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for chunk in chunks(n):
        flat = np.flatnonzero(table[chunk] != 0)  # row-major: item by item
        rows.append(flat // d + chunk.start)
        columns.append(flat % d)
    row, column = np.concatenate(rows), np.concatenate(columns)
    counts = np.bincount(column, minlength=d)
    dense = counts >= DENSE_COLUMN * n if n else np.ones(d, dtype=bool)
    other = ~dense[column]
    row, column = row[other], column[other]
    padded_column, padded_value = _padded(
        torch.from_numpy(row), torch.from_numpy(column), torch.from_numpy(table[row, column]), n
    )
    return AttributeLayout(
        dense_columns=torch.from_numpy(np.flatnonzero(dense)),
        dense=torch.from_numpy(np.ascontiguousarray(table[:, dense])),
        column=padded_column,
        value=padded_value,
        square_norm=torch.from_numpy(np.einsum("ij,ij->i", table, table)),
    )


def short_list_rows(
    category: CategoryData, state: SupportState, layout: AttributeLayout, items: Tensor
) -> ItemRows:
    """``item_rows(item_side(category, state, items))`` from the category's attribute layout
    (``ItemIndex.attributes``): the same representations, the collaborative part always
    dense (the terms summed in another order).

    Args:
        layout: ``attribute_layout(category.item_x)``.
        items: (u,) positions.
    """
    d = category.item_x.shape[1]
    cf = state.item_cf(items)  # (u, r) the mean supporter profile
    return ItemRows(
        dense_columns=torch.cat([layout.dense_columns, torch.arange(d, d + cf.shape[1])]),
        dense=torch.cat([layout.dense[items], cf], dim=1),
        column=layout.column[items],
        value=layout.value[items],
        norm=(layout.square_norm[items] + cf.square().sum(dim=1)).sqrt().clamp_min(COSINE_EPS),
        pop=state.pop[items],
        pop_max=state.pop_max,
        unit_sum=state.item_unit_sum[items],
    )


def short_list_h1(layer: FoldedLayer, weights: Tensor, rows: ItemRows, own: Tensor) -> Tensor:
    """(b, s, h) first-layer pre-activations of each of b users with their own s items: the
    tested twin of ``layer.h1_own(items.take(own.reshape(-1)))``.

    The twin for batches of short lists: a batch's lists share most of their items, so
    ``rows`` holds the distinct ones once and ``own`` points into them; and the items'
    attributes are mostly one-hot, so the columns of ``z`` that few items use are summed over
    each item's nonzeros (``embedding_bag`` over each user's weights, about 5 of 190 attribute
    columns on the bookstore) and only the others (the collaborative part, numeric fields) by
    a batched matrix product. The cosines' numerators come out of the same products; the
    per-pair scalars then meet their weight columns in one more product. The same terms as
    the reference, summed in another order.

    Args:
        layer: b users folded (:func:`~metarec.models.folded.fold_users`).
        weights: ``column_weights(layer)``.
        rows: the distinct items (u rows): :func:`item_rows` or :func:`short_list_rows`.
        own: (b, s) each user's items, as positions into ``rows``.
    """
    b, s = own.shape
    d = weights.shape[1]
    h = layer.item.shape[1]
    out = torch.bmm(rows.dense[own], weights[:, rows.dense_columns])  # (b, s, c) x (b, c, h + 2)
    width = rows.column.shape[1]
    if width:
        bags = rows.column[own] + (torch.arange(b) * d)[:, None, None]  # rows of user u's weights
        out += F.embedding_bag(
            bags.view(b * s, width),
            weights.view(b * d, h + 2),
            per_sample_weights=rows.value[own].view(b * s, width),
            mode="sum",
        ).view(b, s, h + 2)
    norm = rows.norm[own]  # (b, s)
    # each distinct row against every user, then each user's own: 10x fewer bytes moved than
    # gathering (b, s, r) unit sums for a batched product
    affinity = (rows.unit_sum @ layer.cf_unit.T).T.gather(1, own)
    scalars = torch.stack(
        [
            out[..., h] / norm,
            out[..., h + 1] / norm,
            torch.asinh(affinity),
            torch.log1p(rows.pop)[own],
            (rows.pop / rows.pop_max.clamp_min(1.0))[own],
        ],
        dim=2,
    )  # (b, s, 5)
    names = ("cos_profile", "cos_support", "affinity", "log_pop", "pop_share")
    columns_h = torch.stack([layer.column(name) for name in names])  # (5, h)
    h1 = torch.baddbmm(layer.user_terms[:, None, :], scalars, columns_h.expand(b, -1, -1))
    h1 += out[..., :h]
    return h1
