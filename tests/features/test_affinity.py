"""Content affinity: IDF weights that spare dense columns, cosines by hand."""

from __future__ import annotations

import math

import torch

from metarec.features.affinity import ContentIndex, content_affinity, feature_weights


def test_dense_columns_keep_weight_one_wherever_they_are() -> None:
    """Text columns come after the numeric ones: both are dense, neither gets an IDF weight
    (a dense column's document frequency is every item, so IDF would zero it)."""
    item_x = torch.tensor([[1.0, 0.0, 0.3, 0.5], [0.0, 0.0, -1.2, 0.1], [1.0, 1.0, 0.0, -0.4]])
    dense = torch.tensor([False, False, True, True])
    weights = feature_weights(item_x, dense, idf=True)
    expected = [math.log(4 / 3), math.log(4 / 2), 1.0, 1.0]
    torch.testing.assert_close(weights, torch.tensor(expected))


def test_affinity_is_the_weighted_cosine_by_hand() -> None:
    item_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    dense = torch.tensor([False, True])
    profiles = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    w = feature_weights(item_x, dense, idf=True)  # [log(4/3), 1]
    got = content_affinity(profiles, item_x, dense)
    a = float(w[0])
    expected = torch.tensor(
        [
            [1.0, 0.0, a / math.hypot(a, 1.0)],
            [0.0, 0.0, 0.0],  # no history: affinity zero
            [a / math.hypot(a, 1.0), 1 / math.hypot(a, 1.0), 1.0],
        ]
    )
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(ContentIndex(item_x, dense).affinity(profiles), got)
