"""``metarec train``'s default selection, and a ridge model served like any other.

The known-answer store (conftest): a user's taste in a new category is known from their other
categories, popularity carries no signal.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import KNOWN_HELD_OUT, KnownFold, known_answer_config

from metarec.data import Store
from metarec.errors import ArtifactError
from metarec.evaluation.cases import validation_launches
from metarec.evaluation.folds import Fold
from metarec.evaluation.methods import MetarecDefault, MetarecMAML, ModelAsMethod
from metarec.evaluation.ridge import GUARD_STANDARD_ERRORS
from metarec.evaluation.stats import gain_in_standard_errors
from metarec.features import load_catalog
from metarec.meta.model import MetaModel, load_model, save_model
from metarec.meta.ridge_model import RidgeModel
from metarec.ranking.ridge import RidgeRanker
from metarec.selection import Candidate, Selection, _choose, train_selected
from metarec.serving.recommender import Recommender
from metarec.serving.snapshots import check_widths
from metarec.tasks import split_categories


@pytest.fixture(scope="module")
def selection(known_store: Path) -> Selection:
    with Store.open(known_store, read_only=True) as store:
        return train_selected(store, known_answer_config(), progress=False)


def test_auto_fits_both_candidates_and_keeps_the_better_on_validation(
    selection: Selection, known_store: Path
) -> None:
    names = [c.name for c in selection.candidates]
    assert names == ["metarec-maml", "metarec-ridge"]
    mlp, ridge = selection.candidates
    assert mlp.per_user is not None and ridge.per_user is not None
    # ridge (it contains fold-in) unless the MLP learner is ahead beyond the guard
    ahead = mlp.validation > ridge.validation
    beyond = gain_in_standard_errors(mlp.per_user, ridge.per_user) > GUARD_STANDARD_ERRORS
    best = mlp if ahead and beyond else ridge
    assert selection.chosen == best.name and selection.model is best.model
    assert np.nanmean(mlp.per_user) == pytest.approx(mlp.validation)
    # each score is the benchmark's own validation of that model, recomputed here
    config = known_answer_config()
    with Store.open(known_store, read_only=True) as store:
        catalog = load_catalog(store, config)
    splits = split_categories(catalog, config)
    validation = validation_launches(
        catalog, config, Fold(0, splits["train"], splits["validation"], [])
    )
    assert isinstance(mlp.model, MetaModel)
    assert validation.score(ModelAsMethod(mlp.model)) == pytest.approx(mlp.validation)
    # the hold-out stays sealed from every candidate
    for candidate in selection.candidates:
        assert KNOWN_HELD_OUT in candidate.model.splits["hold_out"]
        assert KNOWN_HELD_OUT not in candidate.model.splits["train"]


def test_the_table_goes_into_the_manifest(selection: Selection, tmp_path: Path) -> None:
    folder = save_model(selection.model, tmp_path / "model")
    loaded = load_model(folder)
    assert type(loaded) is type(selection.model)
    assert loaded.selection["chosen"] == selection.chosen
    rows = {row["method"]: row["validation_ndcg@10"] for row in loaded.selection["candidates"]}
    assert rows == {c.name: pytest.approx(c.validation) for c in selection.candidates}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "selection" in json.dumps(manifest)


def test_without_validation_scores_the_ridge_start_is_chosen() -> None:
    ridge = Candidate("metarec-ridge", None, math.nan, 1.0)  # type: ignore[arg-type]
    mlp = Candidate("metarec-maml", None, math.nan, 1.0)  # type: ignore[arg-type]
    chosen, reason = _choose([mlp, ridge])
    assert chosen is ridge and "no validation" in reason
    better = Candidate("metarec-maml", None, 0.5, 1.0)  # type: ignore[arg-type]
    assert _choose([better, Candidate("metarec-ridge", None, 0.4, 1.0)])[0] is better  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ridge_dir(selection: Selection, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ridge = next(c.model for c in selection.candidates if c.name == "metarec-ridge")
    assert isinstance(ridge, RidgeModel)
    return save_model(ridge, tmp_path_factory.mktemp("ridge") / "model")


def test_a_ridge_model_round_trips_through_its_folder(
    ridge_dir: Path, selection: Selection
) -> None:
    ridge = next(c.model for c in selection.candidates if c.name == "metarec-ridge")
    loaded = load_model(ridge_dir)
    assert isinstance(loaded, RidgeModel) and isinstance(ridge, RidgeModel)
    for name, value in ridge.params.items():
        torch.testing.assert_close(loaded.params[name], value, rtol=0, atol=0)
    torch.testing.assert_close(loaded.item_factors, ridge.item_factors, rtol=0, atol=0)
    assert loaded.factor_item_ids == ridge.factor_item_ids


def test_served_ridge_lists_are_the_rankers_exact_top_k(ridge_dir: Path, known_store: Path) -> None:
    category = KNOWN_HELD_OUT
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(ridge_dir, store)
        assert recommender.recommend("u1", category, k=5).fallback == "zero-shot"
        recommender.adapt(category)
        ranker = recommender.ranker(category)
        assert isinstance(ranker, RidgeRanker) and ranker.adapted
        for user_id in ("u1", "u2", "u3"):
            got = recommender.recommend(user_id, category, k=5)
            assert got.fallback is None
            user_idx = recommender.user_index(user_id)
            view = recommender.serving_view(category)
            scores = ranker.scores(np.array([user_idx]))[0]
            seen = recommender.user_inputs(view, user_idx).seen
            scores[seen] = -torch.inf
            expected = view.item_ids[torch.topk(scores, 5).indices.numpy()]
            assert [item.item_id for item in got.items] == list(expected)
            assert not set(view.item_ids[seen.numpy()]) & {i.item_id for i in got.items}
        # read back from the folder, the adaptation ranks the same
        again = Recommender.open(ridge_dir, store)
        assert again.recommend("u1", category, k=5) == recommender.recommend("u1", category, k=5)


def test_mixed_ridge_files_are_refused(ridge_dir: Path) -> None:
    model = load_model(ridge_dir)
    assert isinstance(model, RidgeModel)
    check_widths(model, ridge_dir)  # consistent: no error
    model.params["prior"] = torch.zeros(model.params["prior"].shape[0] + 1, 2, dtype=torch.float64)
    with pytest.raises(ArtifactError, match="mixes files"):
        check_widths(model, ridge_dir)


def test_the_config_names_the_method_and_the_command_line_overrides_it(
    known_store: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from metarec.cli import app

    config = tmp_path / "ridge.toml"
    config.write_text('method = "ridge"\n[tasks]\nshots = 3\nmin_users = 10\n')
    base = ["train", "--store", str(known_store), "--config", str(config), "--quiet"]
    done = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "r")])
    assert done.exit_code == 0, done.output
    assert isinstance(load_model(tmp_path / "r"), RidgeModel)
    over = [*base, "--steps", "3", "--method", "mlp", "--out", str(tmp_path / "m")]
    done = CliRunner().invoke(app, over)
    assert done.exit_code == 0, done.output
    assert isinstance(load_model(tmp_path / "m"), MetaModel)
    config.write_text('method = "best"\n')
    done = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "x")])
    assert done.exit_code != 0 and "method" in done.output


def test_the_ridge_fit_logs_its_zero_shot_choice(known_store: Path) -> None:
    """`metarec train` prints what the zero-shot term chose on validation, as the model keeps it."""
    lines: list[str] = []
    with Store.open(known_store, read_only=True) as store:
        chosen = train_selected(
            store, known_answer_config(), choice="ridge", progress=False, log=lines.append
        )
    model = chosen.model
    assert isinstance(model, RidgeModel) and model.zero_shot
    weight = float(model.params["zero_shot_content"])
    (line,) = [line for line in lines if "zero-shot content weight" in line]
    assert f"zero-shot content weight {weight:g}" in line
    without = model.zero_shot[0]["validation_ndcg@10"]
    kept = max(z["validation_ndcg@10"] for z in model.zero_shot)
    assert line.endswith(f"{without:.4f} -> {kept:.4f}")


def test_without_validation_categories_auto_fits_metarec_ridge_only(
    known_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing to compare on, and the rule keeps metarec-ridge then: the MLP learner is not
    fitted for nothing (it was, 44 s on Douban's two categories)."""
    import metarec.selection as selection_module

    def no_validation(catalog, config):  # type: ignore[no-untyped-def]
        splits = split_categories(catalog, config)
        return {**splits, "train": splits["train"] + splits["validation"], "validation": []}

    def never(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the MLP learner was fitted")

    monkeypatch.setattr(selection_module, "split_categories", no_validation)
    monkeypatch.setattr(selection_module, "train", never)
    lines: list[str] = []
    with Store.open(known_store, read_only=True) as store:
        chosen = train_selected(store, known_answer_config(), progress=False, log=lines.append)
    assert [c.name for c in chosen.candidates] == ["metarec-ridge"]
    assert chosen.chosen == "metarec-ridge" and "no validation categories" in chosen.reason
    assert math.isnan(chosen.candidates[0].validation)
    assert any("fitting metarec-ridge only" in line for line in lines)


def test_the_default_method_without_validation_fits_metarec_ridge_only(
    known_fold: KnownFold, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`metarec evaluate`'s `metarec` follows `metarec train`: with no validation category
    the MLP learner is not fitted only to be discarded (about 70 s a fold on full Douban)."""

    def never(self, context):  # type: ignore[no-untyped-def]
        raise AssertionError("the MLP learner was fitted")

    monkeypatch.setattr(MetarecMAML, "fit", never)
    context = replace(known_fold.context)  # an empty memo: nothing fitted before
    assert context.validate is None and context.validate_users is None
    default = MetarecDefault()
    default.fit(context)
    assert default.chosen["method"] == "metarec-ridge"
    assert "no validation categories" in default.chosen["reason"]
