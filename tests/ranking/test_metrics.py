"""Ranking metrics: hand-computed values, properties, and a cross-check against ranx."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from metarec.errors import ConfigError, DataError
from metarec.ranking import metrics
from metarec.ranking.metrics import (
    TOP_K_METRICS,
    coverage,
    rank_top_k,
    ranked_metrics,
    ranking_metrics,
)

LOG2_3 = math.log2(3)  # discount of rank 2 is 1 / log2(3) = 0.6309


def _metrics(scores, relevant, ks, exclude=None):
    """ranking_metrics on nested lists."""
    return ranking_metrics(
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(relevant),
        ks,
        None if exclude is None else torch.tensor(exclude),
    )


def _assert_values(result, k, expected):
    """Check one user's metrics at cutoff k against a {name: value} dict."""
    for name, value in expected.items():
        key = (name, None) if name == "auc" else (name, k)
        np.testing.assert_allclose(
            result[key], np.broadcast_to(value, result[key].shape), rtol=1e-12, err_msg=str(key)
        )


# Hand-computed cases -------------------------------------------------------------------------

# Six items, ranked by index (item i has score 6 - i), so rank = index + 1.
DESCENDING = [[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]]


def test_perfect_list_scores_one():
    relevant = [[True, True, False, False, False, False]]  # items at ranks 1 and 2
    result = _metrics(DESCENDING, relevant, (2, 3))
    # @2: hits [1, 1]; MAP = (P@1 + P@2) / min(2, 2) = (1 + 1) / 2
    _assert_values(
        result, 2, {"precision": 1, "recall": 1, "ndcg": 1, "hit_rate": 1, "mrr": 1, "map": 1}
    )
    # @3: hits [1, 1, 0]; precision 2/3 although the list is perfect; MAP = (1 + 1) / min(2, 3)
    _assert_values(
        result, 3, {"precision": 2 / 3, "recall": 1, "ndcg": 1, "hit_rate": 1, "mrr": 1, "map": 1}
    )
    _assert_values(result, 3, {"auc": 1.0})  # both relevant items above all 4 others

    # more relevant items than k: a perfect top-2 still scores 1, recall is capped at 2/3;
    # MAP = (P@1 + P@2) / min(|rel|=3, k=2) = 2 / 2 (a |rel| denominator would give 2/3)
    three_relevant = _metrics(DESCENDING, [[True, True, True, False, False, False]], (2,))
    _assert_values(three_relevant, 2, {"recall": 2 / 3, "ndcg": 1, "mrr": 1, "map": 1})


def test_user_without_relevant_candidates_is_nan():
    no_relevant = [False] * 6
    only_relevant_is_excluded = [True] + [False] * 5
    exclude = [[False] * 6, [True] + [False] * 5]
    result = _metrics(DESCENDING * 2, [no_relevant, only_relevant_is_excluded], (2,), exclude)
    for values in result.values():
        assert np.isnan(values).all()


def test_no_hit_list_scores_zero():
    relevant = [[False] * 5 + [True]]  # the relevant item is ranked last (6th)
    result = _metrics(DESCENDING, relevant, (2,))
    _assert_values(
        result,
        2,
        {"precision": 0, "recall": 0, "ndcg": 0, "hit_rate": 0, "mrr": 0, "map": 0, "auc": 0},
    )


def test_truncated_list_with_relevant_items_beyond_k():
    scores = [[8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]]  # rank = index + 1
    relevant = [[False, True, False, True, False, False, True, False]]  # ranks 2, 4, 7
    result = _metrics(scores, relevant, (3, 5))
    ideal_3 = 1 + 1 / LOG2_3 + 1 / 2  # IDCG over min(|rel|=3, k) = 3 ranks = 2.1309
    # @3: hits [0, 1, 0]; DCG = 1/log2(3); MAP = P@2 / min(3, 3) = (1/2) / 3
    _assert_values(
        result,
        3,
        {
            "precision": 1 / 3,
            "recall": 1 / 3,
            "ndcg": (1 / LOG2_3) / ideal_3,  # 0.2961
            "hit_rate": 1,
            "mrr": 1 / 2,
            "map": 1 / 6,
        },
    )
    # @5: hits [0, 1, 0, 1, 0]; DCG = 1/log2(3) + 1/log2(5); IDCG still over 3 ranks;
    # MAP = (P@2 + P@4) / min(3, 5) = (1/2 + 2/4) / 3
    _assert_values(
        result,
        5,
        {
            "precision": 2 / 5,
            "recall": 2 / 3,
            "ndcg": (1 / LOG2_3 + 1 / math.log2(5)) / ideal_3,  # 0.4982
            "hit_rate": 1,
            "mrr": 1 / 2,
            "map": 1 / 3,
        },
    )
    # AUC over 3 relevant x 5 negatives (ranks 1, 3, 5, 6, 8): rank 2 beats 4 of them,
    # rank 4 beats 3, rank 7 beats 1: (4 + 3 + 1) / 15
    _assert_values(result, 5, {"auc": 8 / 15})


def test_ties_go_to_the_lower_item_index():
    assert rank_top_k(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), 2).tolist() == [[1, 2]]
    assert rank_top_k(torch.tensor([[1.0, 2.0, 2.0, 2.0, 3.0]]), 3).tolist() == [[4, 1, 2]]
    # all tied: the list is the items in index order
    assert rank_top_k(torch.zeros(1, 6), 4).tolist() == [[0, 1, 2, 3]]
    # a tie at the cut-off among candidates only: item 0 is excluded
    tied = torch.tensor([[2.0, 2.0, 2.0, 1.0]])
    assert rank_top_k(tied, 2, torch.tensor([[True, False, False, False]])).tolist() == [[1, 2]]


def test_ties_in_metrics_and_half_credit_in_auc():
    relevant = [[False, False, True, False, True, False]]
    result = _metrics([[0.5] * 6], relevant, (2, 3))
    # all tied: the list is [0, 1, 2, ...]; @2 no hit; @3 one hit at rank 3
    _assert_values(result, 2, {"precision": 0, "ndcg": 0, "mrr": 0, "map": 0})
    # @3: DCG = 1/log2(4) = 1/2; IDCG over min(2, 3) = 2 ranks = 1 + 1/log2(3);
    # MAP = P@3 / min(2, 3) = (1/3) / 2
    _assert_values(
        result,
        3,
        {
            "precision": 1 / 3,
            "recall": 1 / 2,
            "ndcg": 0.5 / (1 + 1 / LOG2_3),  # 0.3066
            "hit_rate": 1,
            "mrr": 1 / 3,
            "map": 1 / 6,
        },
    )
    _assert_values(result, 3, {"auc": 0.5})  # 8 tied pairs, half credit each

    # relevant item 1 (score 2) vs negatives scored 3, 2, 1, 0: loses 1, ties 1, beats 2
    partial = _metrics([[3.0, 2.0, 2.0, 1.0, 0.0]], [[False, True, False, False, False]], (1,))
    _assert_values(partial, 1, {"auc": (2 + 0.5) / 4})


def test_infinite_scores_rank_and_tie_like_any_other():
    inf = math.inf
    # relevant item 2 (+inf) ties with item 0 (+inf), beats items 1 (-inf) and 3: 2.5 / 3
    result = _metrics([[inf, -inf, inf, 0.0]], [[False, False, True, False]], (1,))
    _assert_values(result, 1, {"precision": 0, "auc": 2.5 / 3})  # the tie goes to item 0
    # -inf candidates still fill the list, in index order, and excluded item 1 never appears
    scores = torch.tensor([[-inf, -inf, -inf, 1.0]])
    exclude = torch.tensor([[False, True, False, False]])
    assert rank_top_k(scores, 3, exclude).tolist() == [[3, 0, 2]]


def test_support_items_are_not_candidates():
    scores = [[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]]
    relevant = [[True, False, False, True, False, False]]  # item 0 is relevant but in support
    exclude = [[True, False, True, False, False, False]]  # support: items 0 and 2
    result = _metrics(scores, relevant, (2,), exclude)
    # candidates by rank: 1, 3, 4, 5; |rel| = 1 (item 3, rank 2); hits @2 = [0, 1]
    # MAP = P@2 / min(1, 2) = 1/2; AUC: item 3 beats items 4 and 5, loses to 1: 2/3
    _assert_values(
        result,
        2,
        {
            "precision": 1 / 2,
            "recall": 1,
            "ndcg": 1 / LOG2_3,  # IDCG over min(1, 2) = 1 rank = 1
            "hit_rate": 1,
            "mrr": 1 / 2,
            "map": 1 / 2,
            "auc": 2 / 3,
        },
    )
    assert rank_top_k(torch.tensor(scores), 3, torch.tensor(exclude)).tolist() == [[1, 3, 4]]
    # the same user without exclusion: item 0 is a hit at rank 1
    assert _metrics(scores, relevant, (2,))[("mrr", 2)] == pytest.approx([1.0])


def test_several_users_at_once():
    scores = DESCENDING * 4
    relevant = [
        [True, True, False, False, False, False],  # perfect
        [False, False, False, False, False, True],  # no hit
        [False] * 6,  # no relevant item: NaN
        [False, True, False, False, True, False],  # ranks 2 and 5
    ]
    result = _metrics(scores, relevant, (2,))
    # user 3 @2: hits [0, 1]; NDCG = (1/log2 3) / (1 + 1/log2 3); MAP = P@2 / min(2, 2) = 1/4;
    # AUC: negatives at ranks 1, 3, 4, 6; rank 2 beats 3 of them, rank 5 beats 1: 4 / (2 * 4)
    nan = math.nan
    _assert_values(
        result,
        2,
        {
            "precision": [1, 0, nan, 1 / 2],
            "recall": [1, 0, nan, 1 / 2],
            "ndcg": [1, 0, nan, (1 / LOG2_3) / (1 + 1 / LOG2_3)],  # 0.3869
            "hit_rate": [1, 0, nan, 1],
            "mrr": [1, 0, nan, 1 / 2],
            "map": [1, 0, nan, 1 / 4],
            "auc": [1, 0, nan, 4 / 8],
        },
    )
    assert set(result) == {(name, 2) for name in TOP_K_METRICS} | {("auc", None)}
    assert all(values.dtype == np.float64 and values.shape == (4,) for values in result.values())


def test_auc_is_nan_when_every_candidate_is_relevant():
    result = _metrics([[3.0, 2.0, 1.0]], [[True, True, True]], (1,))
    assert np.isnan(result[("auc", None)]).all()
    assert result[("ndcg", 1)] == pytest.approx([1.0])


def test_integer_and_numpy_scores_match_float_tensors():
    scores = np.array([[3, 1, 2, 2, 0]])
    relevant = np.array([[False, False, True, True, False]])
    from_ints = ranking_metrics(scores, relevant, (2,))
    from_floats = ranking_metrics(torch.tensor(scores, dtype=torch.float32), relevant, (2,))
    for key, values in from_floats.items():
        np.testing.assert_array_equal(from_ints[key], values)


def test_coverage_counts_distinct_items():
    top_k = torch.tensor([[0, 1], [1, 2], [2, 0]])
    assert coverage(top_k, 10) == pytest.approx(3 / 10)  # items {0, 1, 2} of 10
    with pytest.raises(DataError, match="catalogue has 2 items"):
        coverage(top_k, 2)


# Errors --------------------------------------------------------------------------------------


def test_k_not_below_the_number_of_candidates_raises():
    scores, relevant = torch.rand(3, 5), torch.zeros(3, 5, dtype=torch.bool)
    with pytest.raises(DataError, match="k=5 must be smaller"):
        ranking_metrics(scores, relevant, (1, 5))
    exclude = torch.zeros(3, 5, dtype=torch.bool)
    exclude[1, :2] = True  # user 1 has 3 candidates
    with pytest.raises(DataError, match="1 user"):
        ranking_metrics(scores, relevant, (3,), exclude)
    assert ranking_metrics(scores, relevant, (2,), exclude)[("ndcg", 2)].shape == (3,)
    # rank_top_k may return a user's whole candidate list, not more
    assert rank_top_k(scores, 3, exclude).shape == (3, 3)
    with pytest.raises(DataError, match="fewer candidates"):
        rank_top_k(scores, 4, exclude)


@pytest.mark.parametrize(
    ("scores", "relevant", "ks", "error", "message"),
    [
        (torch.tensor([[0.1, torch.nan, 0.3]]), None, (1,), DataError, "NaN"),
        (torch.rand(3), None, (1,), DataError, "n_users, n_items"),
        (torch.rand(2, 4), torch.zeros(2, 4), (1,), DataError, "bool"),
        (torch.rand(2, 4), torch.zeros(2, 5, dtype=torch.bool), (1,), DataError, "shape"),
        (torch.rand(2, 4), None, (), ConfigError, "ks"),
        (torch.rand(2, 4), None, (0, 2), ConfigError, "ks"),
    ],
)
def test_bad_inputs_raise_typed_errors(scores, relevant, ks, error, message):
    if relevant is None:
        relevant = torch.zeros(scores.shape, dtype=torch.bool)
    with pytest.raises(error, match=message):
        ranking_metrics(scores, relevant, ks)


# Properties ----------------------------------------------------------------------------------


@st.composite
def ranking_problems(draw, tied_scores: bool = True):
    """(scores, relevant, exclude, ks) with every user holding more than max(ks) candidates."""
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(4, 30))
    shape = (n_users, n_items)
    if tied_scores:  # few distinct values: many ties, including at the cut-off
        values = draw(arrays(np.int8, shape, elements=st.integers(-2, 2)))
        scores = values.astype(np.float32)
    else:
        scores = draw(arrays(np.float64, shape, elements=st.floats(-1e6, 1e6)))
    relevant = draw(arrays(np.bool_, shape))
    exclude = draw(arrays(np.bool_, shape))
    exclude[:, : n_items // 2] = False  # at least half the items stay candidates
    fewest = int((~exclude).sum(axis=1).min())
    ks = draw(st.lists(st.integers(1, fewest - 1), min_size=1, max_size=3, unique=True))
    return torch.tensor(scores), torch.tensor(relevant), torch.tensor(exclude), ks


@settings(max_examples=150, deadline=None)
@given(ranking_problems())
def test_every_metric_lies_in_unit_interval_and_nan_only_without_relevant(problem):
    scores, relevant, exclude, ks = problem
    result = ranking_metrics(scores, relevant, ks, exclude)
    n_relevant = (relevant & ~exclude).sum(dim=1).numpy()
    n_negative = (~relevant & ~exclude).sum(dim=1).numpy()
    for (name, _), values in result.items():
        defined = (n_relevant > 0) & (n_negative > 0) if name == "auc" else n_relevant > 0
        np.testing.assert_array_equal(np.isnan(values), ~defined)
        assert ((values[defined] >= 0) & (values[defined] <= 1 + 1e-12)).all(), name


@settings(max_examples=150, deadline=None)
@given(ranking_problems())
def test_a_perfect_ranking_scores_one(problem):
    _, relevant, exclude, ks = problem
    perfect = relevant.double()  # every relevant item above every other: ties only among equals
    result = ranking_metrics(perfect, relevant, ks, exclude)
    n_relevant = (relevant & ~exclude).sum(dim=1).numpy()
    n_negative = (~relevant & ~exclude).sum(dim=1).numpy()
    has_relevant = n_relevant > 0
    for k in ks:
        for name in ("ndcg", "hit_rate", "mrr", "map"):
            np.testing.assert_allclose(result[(name, k)][has_relevant], 1.0, err_msg=name)
        fits = has_relevant & (n_relevant <= k)
        np.testing.assert_allclose(result[("recall", k)][fits], 1.0)
        # and recall is |rel| capped at k over |rel| when it does not fit
        overflow = n_relevant > k
        np.testing.assert_allclose(result[("recall", k)][overflow], k / n_relevant[overflow])
    np.testing.assert_allclose(result[("auc", None)][has_relevant & (n_negative > 0)], 1.0)


@settings(max_examples=150, deadline=None)
@given(ranking_problems())
def test_rank_top_k_matches_a_sort_by_score_then_index(problem):
    scores, _, exclude, ks = problem
    k = max(ks)
    got = rank_top_k(scores, k, exclude).numpy()
    for user in range(scores.shape[0]):
        candidates = np.flatnonzero(~exclude[user].numpy())
        # lexsort sorts by the last key first: score descending, then index ascending
        expected = candidates[np.lexsort((candidates, -scores[user].numpy()[candidates]))][:k]
        np.testing.assert_array_equal(got[user], expected)


@settings(max_examples=50, deadline=None)
@given(ranking_problems(), st.integers(0, 3))
def test_k_at_or_above_the_number_of_candidates_raises(problem, extra):
    scores, relevant, exclude, _ = problem
    too_big = int((~exclude).sum(dim=1).min()) + extra
    with pytest.raises(DataError):
        ranking_metrics(scores, relevant, (1, too_big), exclude)


def test_user_blocks_do_not_change_results(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (50, 40), generator=generator).float()
    relevant = torch.rand(50, 40, generator=generator) < 0.2
    exclude = torch.rand(50, 40, generator=generator) < 0.2
    whole = ranking_metrics(scores, relevant, (5, 10), exclude)
    monkeypatch.setattr(metrics, "_USER_BLOCK", 7)
    blocked = ranking_metrics(scores, relevant, (5, 10), exclude)
    for key, values in whole.items():
        np.testing.assert_array_equal(blocked[key], values)
    assert torch.equal(rank_top_k(scores, 10, exclude), metrics._top_k(scores, 10, exclude))


# Cross-check against ranx --------------------------------------------------------------------


def test_agrees_with_ranx_where_definitions_agree():
    """ranx (Bassani, ECIR 2022) on random data with distinct scores, so tie rules do not matter.

    ranx defines MAP@k with |rel| as denominator, ours with min(|rel|, k): they agree when
    |rel| <= k and differ by exactly that factor otherwise (docs/METRICS.md). ranx has no AUC.
    """
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(7)
    n_users, n_items, ks = 40, 60, (1, 5, 10, 20)
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float64)
    density = rng.choice([0.0, 0.02, 0.05, 0.15, 0.45], size=(n_users, 1))
    relevant = rng.random((n_users, n_items)) < density
    exclude = rng.random((n_users, n_items)) < 0.15
    ours = ranking_metrics(torch.tensor(scores), torch.tensor(relevant), ks, torch.tensor(exclude))

    candidate_relevant = relevant & ~exclude
    users = [u for u in range(n_users) if candidate_relevant[u].any()]
    qrels = ranx.Qrels(
        {f"u{u}": {f"i{i}": 1 for i in np.flatnonzero(candidate_relevant[u])} for u in users}
    )
    run = ranx.Run(
        {
            f"u{u}": {f"i{i}": float(scores[u, i]) for i in np.flatnonzero(~exclude[u])}
            for u in users
        }
    )
    wanted = [f"{name}@{k}" for name in TOP_K_METRICS for k in ks]  # ranx uses the same names
    ranx.evaluate(qrels, run, wanted)  # fills run.scores[metric][query id]
    assert 0 < len(users) < n_users  # some users have no relevant candidate and are NaN here
    n_relevant = candidate_relevant[users].sum(axis=1)
    assert (n_relevant > max(ks)).any() and (n_relevant < 5).any()  # both MAP cases occur
    for name in TOP_K_METRICS:
        for k in ks:
            per_query = run.scores[f"{name}@{k}"]
            mine = ours[(name, k)][users]
            reference = np.array([per_query[f"u{u}"] for u in users])  # ranx sorts query ids
            if name == "map":
                fits = n_relevant <= k
                np.testing.assert_allclose(mine[fits], reference[fits], rtol=1e-12)
                # where |rel| > k the two differ by exactly the denominator
                np.testing.assert_allclose(
                    mine[~fits] * k, reference[~fits] * n_relevant[~fits], rtol=1e-12
                )
            else:
                np.testing.assert_allclose(mine, reference, rtol=1e-12, err_msg=f"{name}@{k}")


# Speed ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_ranking_of_6000_users_by_4000_items_is_fast():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(6000, 4000, generator=generator)
    relevant = torch.rand(6000, 4000, generator=generator) < 0.005
    exclude = torch.rand(6000, 4000, generator=generator) < 0.002
    started = time.perf_counter()
    result = ranking_metrics(scores, relevant, (5, 10, 20), exclude)
    coverage(rank_top_k(scores, 20, exclude), 4000)
    elapsed = time.perf_counter() - started
    assert result[("auc", None)].shape == (6000,)
    assert elapsed < 15.0, f"took {elapsed:.1f} s; expected about 1 to 2 s on 2 cores"


@settings(max_examples=150, deadline=None)
@given(ranking_problems())
def test_a_shorter_top_k_is_the_start_of_a_longer_one(problem):
    """What lets the harness rank once at max(ks) and cut the lists (evaluation/cases.py)."""
    scores, _, exclude, ks = problem
    longest = rank_top_k(scores, max(ks), exclude)
    for k in ks:
        torch.testing.assert_close(rank_top_k(scores, k, exclude), longest[:, :k])


def _pairwise_auc(scores, relevant, exclude):
    """Mann-Whitney AUC by looping over every (relevant, non-relevant candidate) pair."""
    out = []
    for row, rel, exc in zip(scores.tolist(), relevant.tolist(), exclude.tolist(), strict=True):
        positives = [s for s, r, e in zip(row, rel, exc, strict=True) if r and not e]
        negatives = [s for s, r, e in zip(row, rel, exc, strict=True) if not r and not e]
        pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives]
        out.append(sum(pairs) / len(pairs) if pairs else math.nan)
    return np.array(out)


@settings(max_examples=150, deadline=None)
@given(ranking_problems(), st.integers(0, 5), st.booleans())
def test_auc_counts_every_pair_by_counting_or_by_sorting(problem, width, infinite):
    """Users with few relevant items count negatives row by row, the others sort: both equal
    the pair count, with ties and infinite scores."""
    scores, relevant, exclude, ks = problem
    scores = scores.double()
    if infinite:
        scores[:, 0], scores[:, -1] = torch.inf, -torch.inf
    expected = _pairwise_auc(scores, relevant, exclude)
    for forced in (0, width, 10**6):  # all sorted, a mix, all counted
        for row_items in (0, 10**9):  # counted one row at a time, or a column at a time
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(metrics, "_counting_width", lambda n_items, w=forced: w)
                patch.setattr(metrics, "_ROW_COUNTING_ITEMS", row_items)
                got = ranking_metrics(scores, relevant, ks, exclude)[("auc", None)]
            np.testing.assert_allclose(
                got, expected, rtol=1e-12, err_msg=f"width {forced}, rows from {row_items}"
            )


@settings(max_examples=100, deadline=None)
@given(ranking_problems())
def test_ranked_metrics_returns_the_lists_it_measured(problem):
    scores, relevant, exclude, ks = problem
    values, top = ranked_metrics(scores, relevant, ks, exclude)
    torch.testing.assert_close(top, rank_top_k(scores, max(ks), exclude))
    for key, expected in ranking_metrics(scores, relevant, ks, exclude).items():
        np.testing.assert_array_equal(values[key], expected)


def test_rows_with_more_ties_than_places_take_the_lowest_indices():
    """Only such rows run the tie count; a block mixing them with plain rows ranks both."""
    scores = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    assert rank_top_k(scores, 2).tolist() == [[0, 1], [0, 1]]
    assert rank_top_k(scores, 3).tolist() == [[0, 1, 2], [0, 1, 2]]
    exclude = torch.tensor([[False, True, False, False, False], [False] * 5])
    assert rank_top_k(scores, 2, exclude).tolist() == [[0, 2], [0, 1]]
