"""The benchmark harness: folds, tuning, outputs, run-level determinism, early refusals.

What every method must keep (shapes, determinism, blindness, sealing of what it is shown):
tests/evaluation/test_method_contract.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from tests.conftest import known_answer_config

from metarec.baselines.base import Family, FitContext, Launch
from metarec.config import EvalConfig
from metarec.data.catalog import Catalog
from metarec.errors import ConfigError, DataError
from metarec.evaluation import methods as registry
from metarec.evaluation.folds import make_folds
from metarec.evaluation.harness import evaluate
from metarec.evaluation.report import write_run


class Spy:
    """A method that records what it was shown and ranks by support popularity."""

    name: ClassVar[str] = "spy"
    family: ClassVar[Family] = "baseline"
    grid: ClassVar[list[dict[str, Any]]] = [{}, {"flip": True}]
    seen: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, flip: bool = False) -> None:
        self.flip = flip

    def fit(self, context: FitContext) -> None:
        cats = set(context.catalog.item_category[context.catalog.positives["item_idx"]])
        Spy.seen.append({"fit": cats, "train": set(context.train)})

    def scores(self, launch: Launch) -> torch.Tensor:
        pos = launch.catalog.positives
        here = launch.catalog.item_category[pos["item_idx"].to_numpy()] == launch.name
        Spy.seen.append(
            {"launch": launch.name, "pairs_here": int(here.sum()), "visible": set(launch.visible)}
        )
        counts = torch.zeros(launch.category.n_items)
        counts.index_add_(
            0, torch.as_tensor(launch.category.pos_item), torch.ones(len(launch.category.pos_item))
        )
        return (-counts if self.flip else counts).expand(len(launch.users), -1).clone()


@pytest.fixture()
def spy(monkeypatch: pytest.MonkeyPatch) -> type[Spy]:
    monkeypatch.setitem(registry.METHODS, "spy", Spy)
    Spy.seen.clear()
    return Spy


def _config(**kw: Any) -> EvalConfig:
    base: dict[str, Any] = {
        "methods": ("spy", "popularity"),
        "shots": (1, 3),
        "folds": 3,
        "min_users": 10,
        "ks": (5, 10),
        "n_resamples": 50,
    }
    base.update(kw)
    return EvalConfig(**base)


def test_test_categories_never_reach_training_or_selection(
    spy: type[Spy], known_catalog: Catalog
) -> None:
    result = evaluate(known_catalog, known_answer_config(), _config(), progress=False)
    tested = [c for fold in result.folds for c in fold.test]
    assert sorted(tested) == sorted(set(tested))  # every category tested at most once
    assert len(tested) == len(known_catalog.categories)  # ... and every eligible one once
    for fold in result.folds:
        assert not set(fold.test) & (set(fold.train) | set(fold.validation))
        assert not set(fold.validation) & set(fold.train)
    fits = [s for s in spy.seen if "fit" in s]
    assert len(fits) == 2 * len(result.folds)  # the whole grid, once per fold
    for fit in fits:
        assert fit["fit"] <= fit["train"]  # only training positives were visible to fit()
    for launch in (s for s in spy.seen if "launch" in s):
        assert launch["launch"] not in launch["visible"]
    # at a launch only the support of the launching category is visible: one or three per user
    assert {s["pairs_here"] > 0 for s in spy.seen if "launch" in s} == {True}


def test_tuning_keeps_the_better_setting_and_logs_all(
    spy: type[Spy], known_catalog: Catalog
) -> None:
    result = evaluate(known_catalog, known_answer_config(), _config(), progress=False)
    tried = [t for t in result.tuning if t["method"] == "spy"]
    assert len(tried) == 2 * len(result.folds)
    spy_ndcg = [
        r["mean"]
        for r in result.records
        if r["method"] == "spy" and r["metric"] == "ndcg" and r["category"] == "all"
    ]
    pop_ndcg = [
        r["mean"]
        for r in result.records
        if r["method"] == "popularity" and r["metric"] == "ndcg" and r["category"] == "all"
    ]
    # the kept spy setting is popularity-like, not its reverse: same numbers as popularity
    assert spy_ndcg == pytest.approx(pop_ndcg, abs=0.02)


def test_records_follow_the_protocol_format(
    spy: type[Spy], known_catalog: Catalog, tmp_path: Path
) -> None:
    config = _config(quick=True)
    train_config = known_answer_config()
    result = evaluate(known_catalog, train_config, config, progress=False)
    out = write_run(
        result,
        tmp_path / "run",
        eval_config=config,
        train_config=train_config,
        source="known",
        user_ids=known_catalog.users["user_id"],
        item_ids=known_catalog.items["item_id"],
    )
    metrics = json.loads((out / "metrics.json").read_text())
    record = metrics["records"][0]
    assert set(record) == {
        "method",
        "family",
        "shots",
        "category",
        "metric",
        "k",
        "mean",
        "ci_low",
        "ci_high",
        "n_users",
    }
    names = {r["metric"] for r in metrics["records"]}
    assert names == {
        "precision",
        "recall",
        "ndcg",
        "hit_rate",
        "mrr",
        "map",
        "auc",
        "coverage",
        "gini",
        "top1_popular",
    }
    assert {r["family"] for r in metrics["records"]} == {"baseline"}
    assert any(r["category"] == "all" for r in metrics["records"])
    for r in metrics["records"]:
        if r["mean"] is not None:
            assert 0 <= r["ci_low"] <= r["mean"] <= r["ci_high"] <= 1
    for name in (
        "report.md",
        "config.json",
        "split.json",
        "split_keys.parquet",
        "ndcg10_vs_shots.png",
        "ndcg10_per_category.png",
    ):
        assert (out / name).is_file(), name
    split = json.loads((out / "split.json").read_text())
    keys = pd.read_parquet(out / "split_keys.parquet")
    assert len(keys) == sum(s["support_pairs"] + s["query_pairs"] for s in split["launches"])
    assert "NDCG@10" in (out / "report.md").read_text()


def test_same_seed_same_metrics(known_catalog: Catalog, tmp_path: Path) -> None:
    config = _config(methods=("metarec-maml", "popularity", "random"), quick=True, shots=(1,))
    train_config = known_answer_config(
        meta={"meta_steps": 12, "first_order": True, "inner_steps": 1, "meta_batch_size": 4}
    )
    texts = []
    for run in ("a", "b"):
        result = evaluate(known_catalog, train_config, config, progress=False)
        out = write_run(
            result,
            tmp_path / run,
            eval_config=config,
            train_config=train_config,
            source="known",
            user_ids=known_catalog.users["user_id"],
            item_ids=known_catalog.items["item_id"],
        )
        texts.append((out / "metrics.json").read_text())
    assert texts[0] == texts[1]


def test_refusals_before_any_training(spy: type[Spy], known_catalog: Catalog) -> None:
    train_config = known_answer_config()
    with pytest.raises(ConfigError, match="valid methods"):
        evaluate(known_catalog, train_config, _config(methods=("nope",)), progress=False)
    with pytest.raises(DataError, match="folds"):
        evaluate(known_catalog, train_config, _config(folds=7), progress=False)
    with pytest.raises(DataError, match="shots"):
        evaluate(known_catalog, train_config, _config(shots=(1, 40)), progress=False)
    untimed = known_catalog.restricted(np.ones(len(known_catalog.positives), dtype=bool))
    untimed.positives["timestamp"] = pd.array([None] * len(untimed.positives), dtype="Int64")
    with pytest.raises(DataError, match="timestamp"):
        evaluate(
            catalog=untimed,
            train_config=train_config,
            config=_config(protocol="launch"),
            progress=False,
        )
    with pytest.raises(DataError, match="largest k"):
        evaluate(known_catalog, train_config, _config(ks=(5, 40)), progress=False)
    assert not [s for s in spy.seen if "fit" in s]  # every refusal came before any fit()


def test_folds_are_seeded_and_cover_each_category_once() -> None:
    categories = [f"c{i}" for i in range(11)]
    config = EvalConfig(folds=5, seed=3)
    folds = make_folds(categories, categories, config)
    again = make_folds(categories, categories, config)
    assert folds == again
    assert sorted(c for f in folds for c in f.test) == sorted(categories)
    assert make_folds(categories, categories, EvalConfig(folds=5, seed=4)) != folds


def test_too_few_categories_for_folds_points_to_a_fixed_fold() -> None:
    """A store of two categories (Douban: music, book) cannot rotate folds; the refusal names
    --test-category, which runs it."""
    with pytest.raises(DataError, match="--test-category NAME"):
        make_folds(["Book", "Music"], ["Book", "Music"], EvalConfig(folds=2))


def test_launch_protocol_runs_on_timed_data(spy: type[Spy], known_catalog: Catalog) -> None:
    result = evaluate(
        known_catalog, known_answer_config(), _config(protocol="launch", quick=True), progress=False
    )
    ndcg = [r for r in result.records if r["metric"] == "ndcg" and r["category"] == "all"]
    assert ndcg and all(r["shots"] is None for r in ndcg)
    assert all(r["n_users"] > 0 for r in ndcg)


def test_scoring_users_in_blocks_gives_the_same_metrics(
    known_catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large category's users are scored in blocks (cases.SCORE_BLOCK) to bound memory; the
    metrics, list statistics included, do not depend on the block size."""
    from metarec.evaluation import cases

    config = _config(
        methods=("als", "user-knn", "popularity", "ials-refit", "metarec-ridge"), quick=True
    )
    train_config = known_answer_config()
    texts, blocks, most = [], [], []
    split_blocks = cases.Case.blocks

    def counted(case: cases.Case) -> list[slice]:
        found = split_blocks(case)
        blocks.append(len(found))
        return found

    monkeypatch.setattr(cases.Case, "blocks", counted)
    for block in (cases.SCORE_BLOCK, 7 * 40):  # the known store's categories: 40 items
        monkeypatch.setattr(cases, "SCORE_BLOCK", block)
        blocks.clear()
        result = evaluate(known_catalog, train_config, config, progress=False)
        out = write_run(
            result,
            tmp_path / str(block),
            eval_config=config,
            train_config=train_config,
            source="known",
            user_ids=known_catalog.users["user_id"],
            item_ids=known_catalog.items["item_id"],
        )
        texts.append(json.loads((out / "metrics.json").read_text()))
        most.append(max(blocks))
    assert most[0] == 1 and most[1] > 1  # one block each, then several
    assert texts[0] == texts[1]


def test_a_launchs_own_work_is_done_once_for_all_its_blocks(known_catalog: Catalog) -> None:
    """LaunchMemo: the same launch with other users reuses the work; another category, or new
    fitted state, builds it again."""
    from dataclasses import replace

    from metarec.baselines.base import LaunchMemo, fit_context, make_launch

    names = [c for c in known_catalog.categories]
    context = fit_context(known_catalog, known_answer_config(), names[2:])
    first, _ = make_launch(known_catalog, names[0], 3, visible=names[2:], features=context.features)
    other, _ = make_launch(known_catalog, names[1], 3, visible=names[2:], features=context.features)
    memo, built = LaunchMemo(), []

    def build() -> int:
        built.append(1)
        return len(built)

    state = object()
    assert memo.get(first, state, build) == 1
    assert memo.get(replace(first, users=first.users[:3]), state, build) == 1  # a block
    assert memo.get(other, state, build) == 2  # another launch
    assert memo.get(other, object(), build) == 3  # refitted


def test_the_plan_names_every_category_it_leaves_out_and_why(known_catalog: Catalog) -> None:
    """C3 keeps 10 users (not eligible with 20 needed), C5 three positives per user (eligible
    at 1 shot, not at 5): the console names both, with the reasons and the counts."""
    from metarec.evaluation.harness import plan_run

    positives = known_catalog.positives
    category = known_catalog.item_category[positives["item_idx"].to_numpy()]
    users_c3 = np.unique(positives["user_idx"].to_numpy()[category == "Shelf > C3"])[:10]
    rank = positives.groupby([category, positives["user_idx"]]).cumcount().to_numpy()
    keep = (category != "Shelf > C3") | positives["user_idx"].isin(users_c3).to_numpy()
    keep &= (category != "Shelf > C5") | (rank < 3)
    catalog = known_catalog.restricted(keep)

    lines: list[str] = []
    plan_run(catalog, EvalConfig(shots=(1, 5), min_users=20), lines.append)

    assert lines[0] == (
        "7 of 8 categories eligible; 1 not (fewer than 20 users with enough positives, or too "
        "few items), used for training only: ['Shelf > C3']"
    )
    assert lines[1] == (
        "at 5 shots, 1 of 7 categories not evaluated (fewer than 20 users with more than 5 "
        "positives, or at most 25 items): ['Shelf > C5']"
    )
    everything: list[str] = []
    plan_run(known_catalog, EvalConfig(shots=(1, 5), min_users=20), everything.append)
    assert everything[0] == "all 8 categories eligible"
    assert not any(line.startswith("at 5 shots") for line in everything)
