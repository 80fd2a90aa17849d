"""Run tracking: a run's parameters, metrics and files logged to MLflow (the ``tracking`` extra).

A run folder stays the record (``metarec evaluate`` writes ``config.json``, ``metrics.json``,
``report.md`` and plots into ``--out``); tracking copies it into an MLflow tracking server or
store, so runs can be compared there. Nothing is logged unless a tracking URI is given:
``--mlflow URI`` or ``MLFLOW_TRACKING_URI``. Two functions, the general one and the one for an
evaluation folder::

    from metarec.tracking import log_run
    run_id = log_run(
        "http://mlflow:5000",
        name="train shop",
        params={"meta": {"algorithm": "maml", "inner_steps": 5}},  # nested: meta.algorithm, ...
        metrics={"validation.ndcg_at_10": 0.4779},
        artifacts=[Path("model/manifest.json")],
    )

MLflow is imported on first use, so the package imports without it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from metarec.errors import DataError, MissingExtraError

EXPERIMENT = "metarec"
_BATCH = 100  # MLflow takes at most 100 params per call of its batch endpoint
_PARAM_CHARS = 6000  # and values of at most 6,000 characters
_PLOTS = ("*.png",)
_RUN_FILES = ("report.md", "metrics.json", "config.json", "timings.json")
_URI_VARIABLE = "MLFLOW_TRACKING_URI"
_REFUSED = re.compile(r"[^0-9A-Za-z_\-. :/]")  # what MLflow allows in a metric name


def log_run(
    uri: str,
    *,
    name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    artifacts: Iterable[Path] = (),
    experiment: str = EXPERIMENT,
    steps: Iterable[tuple[int, Mapping[str, float]]] = (),
) -> str:
    """Log one finished run to MLflow and return its run id.

    Args:
        uri: the tracking URI (``http://host:5000``, ``file:///path/mlruns``, ...).
        name: the run's name.
        params: parameters; nested mappings are flattened to dotted keys (``meta.algorithm``),
            values written as text (lists as JSON).
        metrics: metric name to value; non-finite values are left out (MLflow refuses NaN),
            names made valid for MLflow (``@`` as ``_at_``).
        artifacts: files copied into the run.
        experiment: the MLflow experiment (created if missing).
        steps: ``(step, metrics)`` pairs logged at their step (a training curve); non-finite
            values left out.

    Raises:
        MissingExtraError: MLflow is not installed.
        DataError: an artifact does not exist.
    """
    files = [Path(a) for a in artifacts]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"cannot log missing files to MLflow: {', '.join(missing)}")
    mlflow = _mlflow()
    flat = flatten(params)
    # MLflow's set_tracking_uri also exports MLFLOW_TRACKING_URI to the process: put it back,
    # or every later command of this process (the CLI reads the variable) would log there too
    previous = os.environ.get(_URI_VARIABLE)
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=name) as run:
            keys = sorted(flat)
            for start in range(0, len(keys), _BATCH):
                mlflow.log_params({key: flat[key] for key in keys[start : start + _BATCH]})
            if finite := _metric_values(metrics):
                mlflow.log_metrics(finite)
            for step, values in steps:
                if at_step := _metric_values(values):
                    mlflow.log_metrics(at_step, step=step)
            for path in files:
                mlflow.log_artifact(str(path))
            return str(run.info.run_id)
    finally:
        if previous is None:
            os.environ.pop(_URI_VARIABLE, None)
        else:
            os.environ[_URI_VARIABLE] = previous


def _metric_values(metrics: Mapping[str, float]) -> dict[str, float]:
    """Finite values (MLflow refuses NaN) under names MLflow accepts (``ndcg@10`` becomes
    ``ndcg_at_10``; other characters it refuses become ``_``)."""
    named = {}
    for key, value in metrics.items():
        if math.isfinite(float(value)):
            name = _REFUSED.sub("_", key.replace("@", "_at_"))
            named[name] = float(value)
    return named


def log_evaluation(run_dir: str | Path, uri: str, *, name: str | None = None) -> str:
    """Log a ``metarec evaluate`` run folder: its configuration as params, its pooled metrics
    (every method, shot count, metric and cutoff over all test users) and its report, JSON
    files and plots as artifacts. Returns the MLflow run id.

    Metric keys read ``<method>.<metric>_at_<k>.shots_<n>`` (``shots_launch`` for the launch
    window), e.g. ``metarec-maml.ndcg_at_10.shots_5``.

    Raises:
        MissingExtraError: MLflow is not installed.
        DataError: the folder holds no ``metrics.json`` or ``config.json``.
    """
    folder = Path(run_dir)
    try:
        records = json.loads((folder / "metrics.json").read_text())["records"]
        config = json.loads((folder / "config.json").read_text())
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{folder} is not an evaluation run folder (metrics.json, config.json): {exc}"
        ) from exc
    files = [folder / f for f in _RUN_FILES if (folder / f).is_file()]
    files += sorted(p for pattern in _PLOTS for p in folder.glob(pattern))
    return log_run(
        uri,
        name=name or folder.name,
        params=config,
        metrics=evaluation_metrics(records),
        artifacts=files,
    )


def log_training(
    metadata: Mapping[str, Any],
    uri: str,
    *,
    name: str,
    artifacts: Iterable[Path] = (),
) -> str:
    """Log a trained model from its manifest's ``metadata``: the training config and the chosen
    method as params, each candidate's validation score and fit time and the training curve
    (each ``history`` entry's numbers at its step) as metrics. Returns the MLflow run id.

    Metric keys: ``validation.<candidate>.ndcg_at_10``, ``fit_seconds.<candidate>``, and per
    step ``train.<name>`` (``train.loss``, ...).

    Raises:
        MissingExtraError: MLflow is not installed.
        DataError: an artifact does not exist.
    """
    selection = metadata.get("selection") or {}
    splits = metadata.get("splits") or {}
    params: dict[str, Any] = {
        "train": metadata.get("config") or {},
        "chosen": selection.get("chosen"),
        "splits": {part: len(names) for part, names in splits.items()},
    }
    metrics: dict[str, float] = {}
    for candidate in selection.get("candidates") or []:
        label = candidate.get("name", "model")
        if _number(candidate.get("validation")):
            metrics[f"validation.{label}.ndcg_at_10"] = float(candidate["validation"])
        if _number(candidate.get("seconds")):
            metrics[f"fit_seconds.{label}"] = float(candidate["seconds"])
    return log_run(
        uri,
        name=name,
        params=params,
        metrics=metrics,
        artifacts=artifacts,
        steps=_history_steps(metadata.get("history") or []),
    )


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _history_steps(history: Iterable[Mapping[str, Any]]) -> list[tuple[int, dict[str, float]]]:
    """``(step, {train.<name>: value})`` of each history entry with a step and numbers."""
    steps = []
    for entry in history:
        step = entry.get("step") if isinstance(entry, Mapping) else None
        if not isinstance(step, int):
            continue
        values = {
            f"train.{key}": float(value)
            for key, value in entry.items()
            if key != "step" and _number(value)
        }
        if values:
            steps.append((step, values))
    return steps


def evaluation_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The pooled rows (``category == "all"``) of an evaluation's records as metric keys; a
    run without pooled rows (one test category) gives its rows."""
    rows = list(records)
    pooled = [r for r in rows if r.get("category") == "all"] or rows
    metrics = {}
    for r in pooled:
        shots = r.get("shots")
        label = "launch" if shots is None else str(int(shots))
        metrics[f"{r['method']}.{r['metric']}_at_{r['k']}.shots_{label}"] = float(r["mean"])
    return metrics


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings as dotted keys, values as text (lists and None as JSON), cut to MLflow's
    6,000 characters."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        flat[name] = text[:_PARAM_CHARS]
    return flat


def require_mlflow() -> None:
    """Fail before a long run, not after it, when tracking was asked for without MLflow.

    Raises:
        MissingExtraError: MLflow is not installed.
    """
    _mlflow()


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as exc:
        raise MissingExtraError(
            "run tracking needs MLflow: pip install 'metarec[tracking]' (or leave out --mlflow "
            "and unset MLFLOW_TRACKING_URI)"
        ) from exc
    return mlflow
