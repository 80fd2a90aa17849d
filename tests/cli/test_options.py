"""Bad command-line options end in one readable line and exit code 2, before any work: each
case below gave a traceback (or trained a model that could not be read back) before."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from metarec.cli import app

runner = CliRunner()


def _store(tmp_path: Path) -> str:
    return str(tmp_path / "never-opened.duckdb")  # every check fires before the store opens


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--folds", "1"], "folds: Input should be greater than or equal to 2 (got 1)"),
        (["--shots", "a,b"], "--shots takes comma-separated whole numbers"),
        (["--shots", ""], "--shots takes comma-separated whole numbers"),
        (["--shots", "-1"], "shots must be a non-empty list of counts >= 0"),
        (["--ks", "0"], "ks must be a non-empty list of cutoffs >= 1"),
        (["--ks", "5,x"], "--ks takes comma-separated whole numbers"),
        (["--protocol", "foo"], "protocol: Input should be 'loco', 'launch' or 'melu'"),
        (["--min-users", "0"], "min_users: Input should be greater than or equal to 1 (got 0)"),
        (["--seed", "-1"], "seed: Input should be greater than or equal to 0 (got -1)"),
    ],
)
def test_evaluate_refuses_bad_options_in_one_line(
    tmp_path: Path, options: list[str], said: str
) -> None:
    result = runner.invoke(
        app, ["evaluate", "--store", _store(tmp_path), "--out", str(tmp_path / "run"), *options]
    )
    assert result.exit_code == 2, result.output
    assert said in result.output
    assert "Traceback" not in result.output and "errors.pydantic.dev" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_evaluate_jobs_must_be_positive(tmp_path: Path, jobs: str) -> None:
    """--jobs -3 started a run before; 0 meant every core only by accident (the default does)."""
    result = runner.invoke(
        app,
        ["evaluate", "--store", _store(tmp_path), "--out", str(tmp_path / "r"), "--jobs", jobs],
    )
    assert result.exit_code == 2 and "--jobs" in result.output


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--steps", "-1"], "meta_steps: Input should be greater than or equal to 1 (got -1)"),
        (["--steps", "0"], "meta_steps: Input should be greater than or equal to 1 (got 0)"),
        (["--seed", "-5"], "seed: Input should be greater than or equal to 0 (got -5)"),
    ],
)
def test_train_refuses_bad_options_in_one_line(
    tmp_path: Path, options: list[str], said: str
) -> None:
    result = runner.invoke(
        app, ["train", "--store", _store(tmp_path), "--out", str(tmp_path / "m"), *options]
    )
    assert result.exit_code == 2, result.output
    assert said in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_demo_refuses_a_bad_step_count_before_any_work(tmp_path: Path) -> None:
    """It simulated, ingested and trained for -1 steps, then could not read its own model."""
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "--steps", "-1"])
    assert result.exit_code == 2, result.output
    assert "meta_steps" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "demo").exists()


def _serve(tmp_path: Path, secret: str, options: list[str]) -> Result:
    token = tmp_path / "token"
    token.write_text(secret)
    model, store = str(tmp_path / "m"), _store(tmp_path)
    return runner.invoke(
        app, ["serve", "--model", model, "--store", store, "--token-file", str(token), *options]
    )


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--port", "70000"], "port: Input should be less than or equal to 65535 (got 70000)"),
        (["--max-adapt-positives", "0"], "max_adapt_positives: Input should be greater than"),
        (["--torch-threads", "0"], "--torch-threads"),
    ],
)
def test_serve_refuses_bad_settings_in_one_line(
    tmp_path: Path, options: list[str], said: str
) -> None:
    result = _serve(tmp_path, "a-long-enough-secret", options)
    assert result.exit_code == 2, result.output
    assert said in result.output and "Traceback" not in result.output


def test_a_short_token_is_refused_without_echoing_it(tmp_path: Path) -> None:
    result = _serve(tmp_path, "s3cr\n", [])
    assert result.exit_code == 2
    assert "8 or more characters" in result.output and "it has 4" in result.output
    assert "s3cr" not in result.output
