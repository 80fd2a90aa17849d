"""Run tracking: ``metarec evaluate --mlflow URI`` logs the run folder to MLflow (a local store
here); without MLflow installed the tests that need it are skipped, and asking for tracking
fails with the extra to install."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metarec.cli import app
from metarec.errors import DataError, MissingExtraError
from metarec.tracking import (
    evaluation_metrics,
    flatten,
    log_evaluation,
    log_run,
    log_training,
    require_mlflow,
)

runner = CliRunner()

RECORDS = [
    {"category": "all", "method": "popularity", "metric": "ndcg", "k": 10, "shots": 3,
     "mean": 0.25},
    {"category": "all", "method": "metarec-maml", "metric": "ndcg", "k": 10, "shots": None,
     "mean": 0.5},
    {"category": "Poetry", "method": "popularity", "metric": "ndcg", "k": 10, "shots": 3,
     "mean": 0.75},
]  # fmt: skip


def _run_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"records": RECORDS}))
    config = {"evaluation": {"protocol": "loco", "shots": [0, 3]}, "train": {"seed": 0}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "report.md").write_text("# report\n")
    (folder / "ndcg10_vs_shots.png").write_bytes(b"\x89PNG\r\n")
    return folder


@pytest.fixture()
def store_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pytest.importorskip("mlflow", reason="the tracking extra is not installed")
    # MLflow 3 keeps its file store for local use only on request (a database otherwise)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def test_pooled_metrics_and_flat_params() -> None:
    assert evaluation_metrics(RECORDS) == {
        "popularity.ndcg_at_10.shots_3": 0.25,
        "metarec-maml.ndcg_at_10.shots_launch": 0.5,
    }
    assert evaluation_metrics(RECORDS[2:]) == {"popularity.ndcg_at_10.shots_3": 0.75}
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": "x"}) == {
        "a.b": "1",
        "a.c": "[1, 2]",
        "d": "null",
        "e": "x",
    }


def test_tracking_without_mlflow_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(MissingExtraError, match=r"metarec\[tracking\]"):
        log_run("file:///nowhere", name="x", params={}, metrics={})
    with pytest.raises(DataError, match="not an evaluation run folder"):
        log_evaluation(tmp_path, "file:///nowhere")
    with pytest.raises(MissingExtraError, match=r"metarec\[tracking\]"):
        require_mlflow()
    # asked for, without the extra: refused before any training, not after it
    for command in ("train", "evaluate"):
        out = tmp_path / command
        refused = runner.invoke(
            app,
            [command, "--store", str(tmp_path / "none.duckdb"), "--out", str(out),
             "--mlflow", "file:///nowhere"],
        )  # fmt: skip
        assert refused.exit_code != 0 and "metarec[tracking]" in refused.output, command
        assert not out.exists(), command


def test_an_evaluation_folder_is_logged(tmp_path: Path, store_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    run_id = log_evaluation(_run_folder(tmp_path / "run"), store_uri)
    client = MlflowClient(store_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "run"
    assert run.data.params["evaluation.protocol"] == "loco"
    assert run.data.params["evaluation.shots"] == "[0, 3]"
    assert run.data.metrics == {
        "popularity.ndcg_at_10.shots_3": 0.25,
        "metarec-maml.ndcg_at_10.shots_launch": 0.5,
    }
    files = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.md", "metrics.json", "config.json", "ndcg10_vs_shots.png"} <= files


def test_evaluate_logs_to_the_uri_of_the_environment(
    known_store: Path, tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    done = runner.invoke(
        app,
        [
            "evaluate", "--store", str(known_store), "--out", str(tmp_path / "run"),
            "--methods", "popularity", "--shots", "1", "--folds", "2", "--min-users", "10",
            "--ks", "10", "--jobs", "1", "--json", "--quiet",
        ],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    run_id = json.loads(done.stdout)["mlflow_run_id"]
    run = MlflowClient(store_uri).get_run(run_id)
    assert run.data.params["evaluation.protocol"] == "loco"
    assert "popularity.ndcg_at_10.shots_1" in run.data.metrics


METADATA = {
    "config": {"seed": 0, "method": "auto", "meta": {"algorithm": "maml"}},
    "splits": {"train": ["A", "B"], "validation": ["C"], "hold_out": []},
    "history": [
        {"step": 1, "loss": 0.6},
        {"step": 2, "loss": 0.5, "validation_ndcg@10": 0.41, "note": "text is left out"},
        {"loss": 0.1},  # no step: left out
    ],
    "selection": {
        "chosen": "metarec-ridge",
        "candidates": [
            {"name": "metarec-maml", "validation": 0.40, "seconds": 12.5},
            {"name": "metarec-ridge", "validation": 0.43, "seconds": 3.0},
        ],
    },
}


def test_a_training_is_logged_with_its_curve(
    tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"metadata": METADATA}))
    run_id = log_training(METADATA, store_uri, name="train shop", artifacts=[manifest])
    client = MlflowClient(store_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "train shop"
    assert run.data.params["chosen"] == "metarec-ridge"
    assert run.data.params["train.meta.algorithm"] == "maml"
    assert run.data.params["splits.train"] == "2"
    assert run.data.metrics["validation.metarec-ridge.ndcg_at_10"] == 0.43
    assert run.data.metrics["fit_seconds.metarec-maml"] == 12.5
    curve = client.get_metric_history(run_id, "train.loss")
    assert [(m.step, m.value) for m in curve] == [(1, 0.6), (2, 0.5)]
    assert [m.step for m in client.get_metric_history(run_id, "train.validation_ndcg_at_10")] == [2]
    assert {a.path for a in client.list_artifacts(run_id)} == {"manifest.json"}
    # MLflow exports the URI to the process; a later `metarec train` must not log there unasked
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_train_logs_to_the_given_uri(known_store: Path, tmp_path: Path, store_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    config = tmp_path / "small.toml"
    config.write_text(
        "method = 'mlp'\n[tasks]\nshots = 3\ntrain_shots = [1, 3]\nmin_users = 10\n"
        "[model]\nhidden = [16, 8]\n[features]\ncf_rank = 4\n"
        "[meta]\nmeta_batch_size = 4\ninner_steps = 1\n"
    )
    done = runner.invoke(
        app,
        ["train", "--store", str(known_store), "--out", str(tmp_path / "model"),
         "--config", str(config), "--steps", "3", "--quiet", "--mlflow", store_uri],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    client = MlflowClient(store_uri)
    (run,) = client.search_runs(client.get_experiment_by_name("metarec").experiment_id)
    assert run.info.run_id in done.output.replace("\n", "")
    assert run.data.params["train.method"] == "mlp"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train.loss")] == [1, 2, 3]
