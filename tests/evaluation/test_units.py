"""Runs split into (fold, method) units: parallel, resumable, and the same metrics either way."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import known_answer_config

from metarec.config import EvalConfig
from metarec.data.catalog import Catalog
from metarec.evaluation.harness import _tasks, evaluate
from metarec.evaluation.methods import (
    MetarecMAML,
    MetarecRidge,
    choose_default,
    default_candidates,
)
from metarec.evaluation.records import Result
from metarec.evaluation.ridge import GUARD_STANDARD_ERRORS
from metarec.evaluation.stats import gain_in_standard_errors
from metarec.evaluation.units import UnitResult

_METHODS = ("popularity", "als", "metarec-ridge", "metarec-maml")


def _config(**kw: object) -> EvalConfig:
    base: dict[str, object] = {
        "methods": _METHODS,
        "shots": (1, 3),
        "folds": 2,
        "min_users": 10,
        "ks": (5, 10),
        "n_resamples": 50,
    }
    base.update(kw)
    return EvalConfig(**base)


def _same(a: object, b: object) -> None:
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_two_processes_give_the_metrics_of_one(known_catalog: Catalog) -> None:
    train_config, config = known_answer_config(), _config()
    one = evaluate(known_catalog, train_config, config, progress=False, jobs=1)
    two = evaluate(known_catalog, train_config, config, progress=False, jobs=2)
    _same(one.records, two.records)
    _same(one.comparisons, two.comparisons)
    _same(one.tuning, two.tuning)
    assert len(one.split_keys) == len(two.split_keys) > 0
    for a, b in zip(one.split_keys, two.split_keys, strict=True):
        assert (a["fold"], a["category"], a["shots"]) == (b["fold"], b["category"], b["shots"])
        np.testing.assert_array_equal(a["support"], b["support"])
        np.testing.assert_array_equal(a["query"], b["query"])


def test_finished_units_are_reused_and_stale_ones_are_not(
    known_catalog: Catalog, tmp_path: Path
) -> None:
    train_config = known_answer_config()
    config = _config(methods=("popularity", "als"))
    lines: list[str] = []
    first = evaluate(known_catalog, train_config, config, progress=False, units_dir=tmp_path)
    again = evaluate(
        known_catalog, train_config, config, progress=False, units_dir=tmp_path, log=lines.append
    )
    assert any("resuming: 4 of 4 units" in line for line in lines)
    _same(first.records, again.records)
    # another seed is another key: nothing is reused, the results differ
    lines.clear()
    evaluate(
        known_catalog,
        train_config,
        _config(methods=("popularity", "als"), seed=1),
        progress=False,
        units_dir=tmp_path,
        log=lines.append,
    )
    assert not any("resuming" in line for line in lines)


def test_a_unit_cut_off_mid_write_is_run_again(tmp_path: Path) -> None:
    unit = UnitResult(fold=0, method="als", per_user={(1, "C"): {("ndcg", 10): np.ones(3)}})
    unit.save(tmp_path / "fold0-als", key="k")
    assert UnitResult.load(tmp_path / "fold0-als", key="k") is not None
    assert UnitResult.load(tmp_path / "fold0-als", key="other") is None
    (tmp_path / "fold0-als.npz").write_bytes(b"truncated")
    assert UnitResult.load(tmp_path / "fold0-als", key="k") is None


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_run_resumes_to_the_metrics_of_an_uninterrupted_one(
    known_store: Path, tmp_path: Path
) -> None:
    def command(out: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "metarec",
            "evaluate",
            "--store",
            str(known_store),
            "--out",
            str(out),
            "--methods",
            "popularity,als,metarec-ridge,emcdr",
            "--shots",
            "1,3",
            "--folds",
            "2",
            "--min-users",
            "10",
            "--ks",
            "5,10",
            "--jobs",
            "1",
        ]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command(tmp_path / "whole"), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((killed / "units").glob("*.json"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list((killed / "units").glob("*.json")))
    assert 3 <= finished < 8, "the kill should land between the first and the last unit"
    assert not (killed / "metrics.json").exists()
    resumed = subprocess.run(command(killed), check=True, env=env, capture_output=True, text=True)
    assert f"resuming: {finished} of 8 units" in " ".join(resumed.stdout.split()), resumed.stdout[
        :600
    ]
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    again = json.loads((killed / "metrics.json").read_text())
    assert whole == again


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads children from /proc")
def test_workers_stop_when_their_run_is_killed(known_store: Path, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "metarec", "evaluate", "--store", str(known_store),
        "--out", str(tmp_path / "run"), "--methods", "metarec-ridge,emcdr,als,popularity",
        "--shots", "1,3", "--folds", "2", "--min-users", "10", "--ks", "5,10", "--jobs", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    children_file = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + 120
    children: list[int] = []
    while time.monotonic() < deadline and len(children) < 3:  # two workers, a resource tracker
        children = [int(c) for c in children_file.read_text().split()]
        time.sleep(0.1)
    assert len(children) >= 2, "the run should have started its worker processes"
    process.send_signal(signal.SIGKILL)
    process.wait()

    def alive(pid: int) -> bool:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        return "State:\tZ" not in status  # a zombie has exited

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.2)
    assert not any(alive(pid) for pid in children)


def test_methods_that_share_a_fit_run_together_per_fold() -> None:
    todo = [
        (0, "metarec-maml"),
        (0, "pretrain-zeroshot"),
        (0, "pretrain-finetune"),
        (0, "als"),
        (1, "pretrain-finetune"),  # its partner on fold 1 finished earlier: runs alone
        (1, "als"),
    ]
    assert _tasks(todo) == [
        ((0, "metarec-maml"),),
        ((0, "pretrain-zeroshot"), (0, "pretrain-finetune")),
        ((0, "als"),),
        ((1, "pretrain-finetune"),),
        ((1, "als"),),
    ]


def test_shared_fits_in_two_processes_give_the_metrics_of_one(known_catalog: Catalog) -> None:
    train_config = known_answer_config()
    config = _config(methods=("popularity", "pretrain-zeroshot", "pretrain-finetune"))
    one = evaluate(known_catalog, train_config, config, progress=False, jobs=1)
    two = evaluate(known_catalog, train_config, config, progress=False, jobs=2)
    _same(one.records, two.records)
    _same(one.tuning, two.tuning)


def _rows(result: Result, method: str, categories: list[str]) -> list[str]:
    """The method's per-category records, without the method's name, comparable across methods."""
    rows = [
        {k: v for k, v in r.items() if k not in ("method", "family")}
        for r in result.records
        if r["method"] == method and r["category"] in categories
    ]
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_default_is_the_candidate_validation_chose(
    known_catalog: Catalog, jobs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fits: list[str] = []
    for cls in (MetarecMAML, MetarecRidge):
        real = cls.fit

        def counted(self: object, context: object, real: Callable[..., None] = real) -> None:
            fits.append(type(self).__name__)
            real(self, context)

        monkeypatch.setattr(cls, "fit", counted)
    config = _config(methods=("metarec-maml", "metarec-ridge", "metarec"))
    result = evaluate(known_catalog, known_answer_config(), config, progress=False, jobs=jobs)
    tried = {(r["method"], r["fold"], json.dumps(r["setting"])): r for r in result.tuning}
    compared = 0
    for fold in result.folds:
        chosen = tried[("metarec", fold.index, "{}")]["chosen"]
        scores = chosen["validation"]
        # the default keeps the better validation score of the candidates' default fits ...
        assert (
            scores["metarec-maml"]
            == tried[("metarec-maml", fold.index, "{}")]["validation_ndcg@10"]
        )
        assert (
            scores["metarec-ridge"]
            == tried[("metarec-ridge", fold.index, "{}")]["validation_ndcg@10"]
        )
        # ridge (it contains fold-in) unless the MLP learner scores higher beyond the guard
        mlp_ahead = scores["metarec-maml"] > scores["metarec-ridge"]
        guarded = "within the guard" in chosen["reason"]
        assert chosen["method"] == (
            "metarec-maml" if mlp_ahead and not guarded else "metarec-ridge"
        )
        assert not guarded or mlp_ahead
        # ... and ranks with it: where the candidate's own tuning kept its default setting,
        # the two methods' records are the same, user for user
        own = [r for r in result.tuning if r["method"] == chosen["method"]]
        best = max(
            (r for r in own if r["fold"] == fold.index), key=lambda r: r["validation_ndcg@10"]
        )
        if best["setting"] == {}:
            assert _rows(result, "metarec", fold.test) == _rows(result, chosen["method"], fold.test)
            compared += 1
    assert compared > 0
    if jobs == 1:  # in one process the default re-used both fits: none was repeated
        grid_fits = len([r for r in result.tuning if r["method"] != "metarec"])
        assert len(fits) == grid_fits


def test_the_default_rule() -> None:
    ridge, mlp = MetarecRidge.name, "metarec-maml"
    # by the pooled score alone where nothing pairs the users
    assert choose_default({mlp: 0.5, ridge: 0.4})[0] == mlp
    assert choose_default({mlp: 0.4, ridge: 0.5})[0] == ridge
    assert choose_default({mlp: 0.5, ridge: 0.5})[0] == mlp  # the first of equals
    name, reason = choose_default({mlp: math.nan, ridge: math.nan})
    assert name == ridge and "no validation categories" in reason
    assert choose_default({mlp: math.nan, ridge: 0.1})[0] == ridge
    # paired per user: the MLP learner replaces ridge only beyond GUARD_STANDARD_ERRORS
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, size=400)
    noise = rng.normal(0.0, 0.05, size=400)
    for gain, expected in ((0.0005, ridge), (0.05, mlp)):
        arrays = {mlp: base + gain + noise, ridge: base}
        scores = {name: float(values.mean()) for name, values in arrays.items()}
        assert scores[mlp] > scores[ridge]
        se = gain_in_standard_errors(arrays[mlp], arrays[ridge])
        assert (se > GUARD_STANDARD_ERRORS) == (expected == mlp)
        name, reason = choose_default(scores, arrays)
        assert name == expected, reason
        assert ("within the guard" in reason) == (expected == ridge)


def test_the_default_follows_the_configured_algorithm() -> None:
    config = known_answer_config()
    label, cls, setting = default_candidates(config)[0]
    assert (label, cls, setting) == ("metarec-maml", MetarecMAML, {})
    reptile = config.model_copy(
        update={"meta": config.meta.model_copy(update={"algorithm": "reptile"})}
    )
    assert default_candidates(reptile)[0] == (
        "metarec-reptile",
        MetarecMAML,
        {"algorithm": "reptile"},
    )


def test_the_eta_weighs_the_units_left_by_what_their_methods_cost() -> None:
    """Hand-computed: metarec-maml (weight 1) took 100 s, so per weight 100 s; left are
    metarec-film (1.0 -> 100 s), metarec-ridge (0.4 -> 40 s) and two small methods (0.04 -> 4 s
    each), 148 s over 2 workers; once metarec-film's own unit is known (60 s) the ridge
    estimate follows the new rate, (100 + 60) s over 2 weights = 80 s per weight."""
    from metarec.evaluation.harness import _Clock

    lines: list[str] = []
    todo = [
        (0, "metarec-maml"),
        (0, "metarec-film"),
        (0, "metarec-ridge"),
        (0, "random"),
        (0, "popularity"),
    ]
    clock = _Clock(todo, total=5, say=lines.append, workers=2)
    clock.finished((0, "metarec-maml"), 100.0)
    assert clock.eta() == pytest.approx(148.0 / 2)
    assert lines[-1].endswith("[1/5 units, 0:00 elapsed, ETA 1:14]")
    clock.finished((0, "metarec-film"), 60.0)
    assert clock.eta() == pytest.approx((0.4 * 80 + 2 * 0.04 * 80) / 2)
    clock.finished((0, "metarec-ridge"), 10.0)
    clock.finished((0, "random"), 1.0)
    # per weight: 171 s over 1 + 1 + 0.4 + 0.04; one unit left keeps one worker busy
    assert clock.eta() == pytest.approx(0.04 * 171 / 2.44)
    clock.finished((0, "popularity"), 1.0)
    assert "ETA" not in lines[-1]


def test_a_free_worker_takes_the_earliest_folds_longest_expected_task() -> None:
    """Before any unit has finished the weights order the tasks (the pretraining pair, 0.9 +
    0.6, before metarec-maml, 1.0, before MeLU, 0.9, before ials-refit, 0.7); once a method
    has finished a unit its own time counts, and a later fold waits for the earlier one."""
    from metarec.evaluation.harness import _Clock, _next_task

    todo = [
        (0, "metarec-maml"),
        (0, "pretrain-zeroshot"),
        (0, "pretrain-finetune"),
        (0, "ials-refit"),
        (0, "melu"),
        (0, "als"),
        (1, "metarec-maml"),
        (1, "ials-refit"),
        (1, "melu"),
    ]
    clock = _Clock(todo, total=len(todo), say=lambda _: None, workers=2)
    queue = _tasks(todo)
    first = _next_task(queue, clock)
    assert first == ((0, "pretrain-zeroshot"), (0, "pretrain-finetune"))
    assert _next_task(queue, clock) == ((0, "metarec-maml"),)
    assert _next_task(queue, clock) == ((0, "melu"),)
    clock.finished((0, "metarec-maml"), 100.0)
    clock.finished((0, "melu"), 20.0)
    assert _next_task(queue, clock) == ((0, "ials-refit"),)
    assert _next_task(queue, clock) == ((0, "als"),)
    # fold 1: metarec-maml took 100 s and MeLU 20 s; ials-refit is expected at its weight's
    # share of what finished, 0.7 x 120 / 1.9 = 44 s, so it goes between them
    assert [_next_task(queue, clock)[0][1] for _ in range(3)] == [
        "metarec-maml",
        "ials-refit",
        "melu",
    ]
    assert queue == []
