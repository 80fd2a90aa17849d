"""Every registered algorithm through ``metarec train --algorithm NAME``, then adapt and recommend.

A few meta-steps on the known-answer store: this checks that each algorithm trains, saves,
loads, adapts a sealed category and ranks it through the product's own paths, not quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import KNOWN_HELD_OUT
from typer.testing import CliRunner

from metarec.cli import app
from metarec.meta import ALGORITHMS
from metarec.meta.model import load_model

runner = CliRunner()
CONFIG = (
    "[tasks]\nshots = 3\ntrain_shots = [1, 3]\nmin_users = 10\n"
    "[model]\nhidden = [16, 8]\n[features]\ncf_rank = 4\n"
    "[meta]\nmeta_batch_size = 4\ninner_steps = 2\n"
)


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_train_adapt_recommend_with_each_algorithm(
    name: str, known_store: Path, tmp_path: Path
) -> None:
    config, model = tmp_path / "small.toml", str(tmp_path / "model")
    config.write_text(CONFIG)
    store = str(known_store)
    common = ["--store", store, "--hold-out", KNOWN_HELD_OUT, "--steps", "3", "--quiet"]
    _ok("train", *common, "--out", model, "--config", str(config), "--algorithm", name)
    loaded = load_model(model)
    assert loaded.config.meta.algorithm == name
    if name == "meta_sgd":  # the learned rates travel in the artifact with the weights
        assert any(key.startswith("lr.") for key in loaded.params)
    _ok("adapt", "--model", model, "--store", store, "--category", KNOWN_HELD_OUT)
    top = json.loads(
        _ok(
            "recommend",
            "--model",
            model,
            "--store",
            store,
            "--category",
            KNOWN_HELD_OUT,
            "--user",
            "u1",
            "-k",
            "5",
            "--json",
        )
    )
    assert len(top["items"]) == 5


def test_unknown_algorithm_exits_2_naming_the_valid_ones(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            "--store",
            str(tmp_path / "s.duckdb"),
            "--out",
            str(tmp_path / "m"),
            "--algorithm",
            "maml3",
        ],
    )
    assert result.exit_code == 2
    assert all(f"'{name}'" in result.output for name in ALGORITHMS)
