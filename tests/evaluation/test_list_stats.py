"""How personal the lists are: Gini of top-k appearances and the top-1-is-most-popular share."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import known_answer_config

from metarec.config import EvalConfig
from metarec.data.catalog import Catalog
from metarec.evaluation.cases import gini
from metarec.evaluation.harness import evaluate


def test_gini_by_hand() -> None:
    assert gini(np.array([5, 5, 5, 5])) == 0.0
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(3 / 4)  # (n - 1) / n: one takes all
    # x = (1, 2, 3): sum_i (2i - n - 1) x_i / (n * total) = (-2 + 0 + 6) / (3 * 6)
    assert gini(np.array([3, 1, 2])) == pytest.approx(4 / 18)
    assert gini(np.zeros(3)) == 0.0


def test_popularity_puts_the_most_supported_item_first_for_everyone(
    known_catalog: Catalog,
) -> None:
    config = EvalConfig(
        methods=("popularity", "random"),
        shots=(3,),
        folds=2,
        min_users=10,
        ks=(5, 10),
        n_resamples=50,
        quick=True,
    )
    result = evaluate(known_catalog, known_answer_config(), config, progress=False)
    share = {
        r["method"]: r["mean"]
        for r in result.records
        if r["metric"] == "top1_popular" and r["category"] == "all"
    }
    gini10 = {
        r["method"]: r["mean"]
        for r in result.records
        if r["metric"] == "gini" and r["k"] == 10 and r["category"] != "all"
    }
    # one list for everyone, the most supported item first (except for its own supporters)
    assert share["popularity"] > 0.8
    assert share["random"] < 0.2
    assert gini10["popularity"] > gini10["random"]  # ten items fill every popularity list
