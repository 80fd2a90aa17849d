"""The new-category benchmark: every method, sealed categories, exact full ranking.

PROTOCOL.md §2 (leave-categories-out, ``protocol="loco"``) and §3 (launch-time,
``protocol="launch"``), step by step:

1. eligible categories: at least ``min_users`` users with more than the largest shot count of
   positives there (for §3: with positives after the launch window);
2. a seeded shuffle deals them into ``folds`` folds; each fold's categories are sealed test
   categories once; a seeded share of the other eligible categories validates, the rest (and every
   ineligible category) trains;
3. each method is fitted on the training categories only, once per setting of its grid (its
   tuning budget), and the setting with the best validation NDCG@10 is kept;
4. each test category launches (k-shot per user, or the launch window): the method sees a sealed
   :class:`~metarec.baselines.base.Launch`, ranks every item of the category, and is scored
   against the held-out positives; each user's own support items are not candidates;
5. means over users with bootstrap CIs, per category and pooled, and paired tests of every method
   against the best baseline over the same users.

Nothing here depends on wall-clock time or global random state: the same seed gives the same
``metrics.json``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from metarec.config import EvalConfig, TrainConfig
from metarec.data.catalog import Catalog
from metarec.errors import DataError
from metarec.evaluation.folds import eligible_categories, fixed_fold, make_folds
from metarec.evaluation.methods import SHARED_FITS, resolve_methods, start_order
from metarec.evaluation.records import PerUser, Result, Tops, comparisons, method_records
from metarec.evaluation.units import (
    Plan,
    UnitResult,
    run_unit,
    unit_key,
)


def evaluate(
    catalog: Catalog,
    train_config: TrainConfig,
    config: EvalConfig,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    jobs: int = 1,
    units_dir: Path | None = None,
    resume: bool = True,
) -> Result:
    """Run the benchmark.

    Args:
        catalog: the store's catalogue (loaded with ``train_config.feedback``).
        train_config: shared settings every method uses (features, tasks, inner-loop budget).
        config: the benchmark settings.
        progress: report each unit as it starts and finishes (through ``log``).
        log: where to send one-line progress notes (the CLI prints them).
        jobs: (fold, method) units run side by side in this many processes, one torch thread
            each; the result is the same for any number.
        units_dir: where finished units are written; with ``resume``, a unit found there under
            the same key (same data, configs, fold, method and code) is read back, not
            recomputed (resume after a kill).
        resume: read finished units back from ``units_dir`` (else recompute and overwrite).

    Raises:
        ConfigError: an unknown method name.
        DataError: too few eligible categories, shots larger than the data supports, or the
            launch protocol on a store without timestamps. All raised before any training.
    """
    method_classes = resolve_methods(config.methods)
    say = log or (lambda _: None)
    plan = plan_run(catalog, config, say)
    result = Result(folds=plan.folds)
    categories = plan.eligible_at[plan.shots_list[0]]
    result.skipped = [
        {"category": name, "shots": shots}
        for shots in plan.shots_list
        for name in categories
        if name not in plan.eligible_at[shots]
    ]
    units = [(fold.index, cls.name) for fold in plan.folds for cls in method_classes]
    keys = {
        unit: unit_key(catalog, train_config, config, plan.folds[unit[0]], unit[1])
        for unit in units
    }
    firsts = {(fold.index, method_classes[0].name) for fold in plan.folds}
    finished: dict[tuple[int, str], UnitResult] = {}
    if units_dir is not None:
        units_dir.mkdir(parents=True, exist_ok=True)
        for unit in units if resume else []:
            found = UnitResult.load(_unit_path(units_dir, unit), keys[unit])
            if found is not None:
                finished[unit] = found
        if finished:
            say(f"resuming: {len(finished)} of {len(units)} units already finished in {units_dir}")
    # Fold by fold (a worker keeps one fold's shared inputs), the longest units of each first.
    order = {name: i for i, name in enumerate(start_order([cls.name for cls in method_classes]))}
    todo = sorted(
        (unit for unit in units if unit not in finished), key=lambda u: (u[0], order[u[1]])
    )
    clock = _Clock(
        todo, len(units), say if progress else (lambda _: None), workers=min(jobs, len(todo))
    )
    families = {cls.name: cls.family for cls in method_classes}
    by_method: dict[str, list[dict[str, Any]]] = {}  # each method's records
    if jobs <= 1 or len(todo) <= 1:
        for unit in todo:
            clock.started(unit)
            fold = plan.folds[unit[0]]
            finished[unit] = run_unit(
                catalog, train_config, config, plan, fold, unit[1], split_keys=unit in firsts
            )
            if units_dir is not None:
                finished[unit].save(_unit_path(units_dir, unit), keys[unit])
            clock.finished(unit, finished[unit].seconds)
        for name in families:
            results = _method_results(name, units, finished)
            by_method[name] = method_records(
                name, families[name], *results, plan.shots_list, config
            )
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding threads
        workers = min(jobs, len(todo))
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(catalog, train_config, config, plan),
        ) as pool:
            # A method's records (bootstrap CIs: seconds per method on large launches) are
            # computed by a worker as soon as its last unit is done, in the time the other
            # workers still spend on their last units. Units are therefore handed out one at a
            # time as workers free up: had they all been queued at the start, every method's
            # records would wait behind the last unit (measured: 3:50 of a 42:50 run).
            queue = _tasks(todo)
            running: dict[Future[list[UnitResult]], tuple[tuple[int, str], ...]] = {}
            left = Counter(name for _, name in todo)
            pending: dict[str, Future[list[dict[str, Any]]]] = {}

            def submit_task() -> None:
                task = _next_task(queue, clock)
                arguments = [
                    (
                        u,
                        keys[u],
                        None if units_dir is None else _unit_path(units_dir, u),
                        u in firsts,
                    )
                    for u in task
                ]
                running[pool.submit(_worker_units, arguments)] = task

            def submit_records(name: str) -> None:
                results = _method_results(name, units, finished)
                pending[name] = pool.submit(_worker_records, name, families[name], *results)

            for name in families:
                if not left[name]:
                    submit_records(name)
            while queue and len(running) < workers:
                submit_task()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    for unit, unit_result in zip(running.pop(future), future.result(), strict=True):
                        finished[unit] = unit_result
                        clock.finished(unit, unit_result.seconds)
                        left[unit[1]] -= 1
                        if not left[unit[1]]:
                            submit_records(unit[1])  # queued ahead of the next task
                while queue and len(running) < workers:
                    submit_task()
            by_method = {name: pending[name].result() for name in families}

    per_user: PerUser = {}
    for unit in units:  # in (fold, method) order, whatever order they finished in
        unit_result = finished[unit]
        result.tuning.extend(unit_result.tuning)
        result.timings[unit_result.method] = (
            result.timings.get(unit_result.method, 0.0) + unit_result.seconds
        )
        for (shots, name), values in unit_result.per_user.items():
            per_user[(unit_result.method, shots, name)] = values
        result.split_keys.extend(unit_result.split_keys)  # carried by each fold's first unit
    result.records = [entry for name in families for entry in by_method[name]]
    result.comparisons = comparisons(per_user, families, plan.shots_list)
    return result


def _method_results(
    name: str, units: list[tuple[int, str]], finished: dict[tuple[int, str], UnitResult]
) -> tuple[PerUser, Tops, dict[tuple[str, int | None, str], int]]:
    """The per-user metrics, list statistics and user counts of one method's units, keyed as
    :func:`~metarec.evaluation.records.method_records` reads them, fold by fold."""
    per_user: PerUser = {}
    tops: Tops = {}
    n_users: dict[tuple[str, int | None, str], int] = {}
    for unit in units:
        if unit[1] != name:
            continue
        done = finished[unit]
        for (shots, category), values in done.per_user.items():
            per_user[(name, shots, category)] = values
            n_users[(name, shots, category)] = done.n_users[(shots, category)]
        for (shots, category, metric, k), share in done.tops.items():
            tops[(name, shots, category, metric, k)] = share
    return per_user, tops, n_users


def plan_run(catalog: Catalog, config: EvalConfig, say: Callable[[str], None]) -> Plan:
    """Shot counts, eligible categories per shot count, and folds (PROTOCOL.md §2 steps 1-2).

    Every category or shot count left out is named through ``say``, with the reason.
    """
    if config.protocol == "launch" and catalog.positives["timestamp"].isna().any():
        raise DataError(
            "the launch protocol needs a timestamp on every interaction and this store has "
            "interactions without one; use --protocol loco"
        )
    shots_list: list[int | None] = [*sorted(config.shots)] if config.protocol == "loco" else [None]
    # PROTOCOL.md §2 step 1, per shot count: min_users users with more than `shots` positives,
    # and more items than the largest k plus the shots (so every user keeps enough candidates).
    eligible_at = {
        shots: eligible_categories(
            catalog,
            config.min_users,
            (shots or 0) + 1 if shots is not None else 2,
            min_items=max(config.ks) + (shots or 0),
        )
        for shots in shots_list
    }
    for shots, names in eligible_at.items():
        if not names:
            raise DataError(
                f"no category has {config.min_users} users with more than {shots} positives and "
                f"more than {max(config.ks) + (shots or 0)} items (the largest k plus the "
                f"shots): {shots} shots or k = {max(config.ks)} is larger than the data "
                "supports; lower --shots or --ks (or --min-users)"
            )
    categories = eligible_at[shots_list[0]]  # the smallest shot count admits the most
    left_out = sorted(set(catalog.categories) - set(categories))
    if left_out:  # named: the eligible ones are the rest
        say(
            f"{len(categories)} of {len(catalog.categories)} categories eligible; "
            f"{len(left_out)} not (fewer than {config.min_users} users with enough positives, "
            f"or too few items), used for training only: {left_out}"
        )
    else:
        say(f"all {len(categories)} categories eligible")
    for shots in shots_list[1:]:
        dropped = [c for c in categories if c not in eligible_at[shots]]
        if dropped:
            say(
                f"at {shots} shots, {len(dropped)} of {len(categories)} categories not evaluated "
                f"(fewer than {config.min_users} users with more than {shots} positives, or at "
                f"most {max(config.ks) + (shots or 0)} items): {dropped}"
            )
    folds = (
        [fixed_fold(categories, catalog, config)]
        if config.test_categories
        else make_folds(categories, catalog.categories, config)
    )
    if config.quick:
        folds = folds[:1]
    for fold in folds:
        say(
            f"fold {fold.index + 1}/{len(folds)}: test {fold.test}, "
            f"validation {fold.validation}, {len(fold.train)} training categories"
        )
    return Plan(shots_list=shots_list, eligible_at=eligible_at, folds=folds)


def _tasks(todo: list[tuple[int, str]]) -> list[tuple[tuple[int, str], ...]]:
    """``todo`` as the tasks a worker takes: one unit each, except that the units of one fold
    whose methods share a fit (:data:`~metarec.evaluation.methods.SHARED_FITS`) go together."""
    group_of = {name: i for i, group in enumerate(SHARED_FITS) for name in group}
    tasks: list[list[tuple[int, str]]] = []
    together: dict[tuple[int, int], list[tuple[int, str]]] = {}
    for unit in todo:
        group = group_of.get(unit[1])
        if group is None:
            tasks.append([unit])
        elif (unit[0], group) in together:
            together[(unit[0], group)].append(unit)
        else:
            together[(unit[0], group)] = [unit]
            tasks.append(together[(unit[0], group)])
    return [tuple(task) for task in tasks]


def _next_task(
    queue: list[tuple[tuple[int, str], ...]], clock: _Clock
) -> tuple[tuple[int, str], ...]:
    """Take the task a free worker should run next: the earliest fold's (a worker keeps one
    fold's inputs), and in it the longest expected (:meth:`_Clock.expected`), so that no long
    unit starts last while the other workers run out of work. The 100k-item store's quick
    run ended with MeLU alone for a minute when the order was fixed in advance."""
    task = min(
        queue,
        key=lambda t: (t[0][0], -sum(clock.expected(method) for _, method in t)),
    )
    queue.remove(task)
    return task


def _unit_path(folder: Path, unit: tuple[int, str]) -> Path:
    return folder / f"fold{unit[0]}-{unit[1]}"


# What a method's unit costs, relative to metarec-maml's, until one of its own units has
# finished in the run (measured: units of the quick run on the 100k-item store and of the full
# ML-1M run, docs/BENCHMARKS.md "Evaluation speed"): the MLP learners' training and exact
# scoring dominate, and the methods not listed take a few percent of one of them. A plain
# "elapsed / units done" estimate, with the longest units started first, said 43 minutes
# where the run took 7.
UNIT_WEIGHTS: dict[str, float] = {
    "metarec-maml": 1.0,
    "metarec-film": 1.0,
    "melu": 0.9,
    "pretrain-zeroshot": 0.9,
    "pretrain-finetune": 0.6,
    "ials-refit": 0.7,
    "metarec-ridge": 0.4,
}
OTHER_WEIGHT = 0.04


class _Clock:
    """Plain progress lines per unit: what runs, what finished, elapsed and an ETA.

    The ETA is the expected time of the units left, over the workers: a method's units are
    expected to take what its finished units took on average, and a method with none finished
    its :data:`UNIT_WEIGHTS` share of what the finished units took per weight.
    """

    def __init__(
        self,
        todo: list[tuple[int, str]],
        total: int,
        say: Callable[[str], None],
        workers: int = 1,
    ) -> None:
        self.total, self.say, self.workers = total, say, max(1, workers)
        self.done = total - len(todo)
        self.left = Counter(method for _, method in todo)
        self.took: dict[str, list[float]] = {}  # seconds of each method's finished units
        self.start = time.perf_counter()

    def started(self, unit: tuple[int, str]) -> None:
        elapsed = _clock(time.perf_counter() - self.start)
        self.say(f"  fold {unit[0] + 1} {unit[1]}: started ({elapsed} elapsed)")

    def finished(self, unit: tuple[int, str], seconds: float) -> None:
        self.done += 1
        self.left[unit[1]] -= 1
        self.took.setdefault(unit[1], []).append(seconds)
        elapsed = time.perf_counter() - self.start
        left = self.total - self.done
        eta = f", ETA {_clock(self.eta())}" if left else ""
        self.say(
            f"  fold {unit[0] + 1} {unit[1]}: done in {seconds:.1f} s "
            f"[{self.done}/{self.total} units, {_clock(elapsed)} elapsed{eta}]"
        )

    def eta(self) -> float:
        """Seconds until the units left are done (see the class docstring)."""
        expected = sum(max(n, 0) * self.expected(method) for method, n in self.left.items())
        return expected / min(self.workers, max(1, sum(self.left.values())))

    def expected(self, method: str) -> float:
        """Seconds one unit of ``method`` is expected to take (see the class docstring); before
        any unit has finished, its :data:`UNIT_WEIGHTS` share (only the order means anything)."""
        took = self.took.get(method)
        if took:
            return sum(took) / len(took)
        if not self.took:
            return _weight(method)
        weight = sum(len(took) * _weight(name) for name, took in self.took.items())
        return _weight(method) * sum(sum(took) for took in self.took.values()) / weight


def _weight(method: str) -> float:
    return UNIT_WEIGHTS.get(method, OTHER_WEIGHT)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


# ---- worker processes -------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _start_worker(
    catalog: Catalog, train_config: TrainConfig, config: EvalConfig, plan: Plan
) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    _WORKER.update(catalog=catalog, train_config=train_config, config=config, plan=plan)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose run was killed stops too, instead of finishing its unit as an orphan
    (its finished units are on disk; the one it was working on is simply run again)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _worker_unit(
    unit: tuple[int, str], key: str, path: Path | None, with_split_keys: bool
) -> UnitResult:
    plan: Plan = _WORKER["plan"]
    print(
        f"  fold {unit[0] + 1} {unit[1]}: started in worker {os.getpid()}",
        file=sys.stderr,
        flush=True,
    )
    done = run_unit(
        _WORKER["catalog"],
        _WORKER["train_config"],
        _WORKER["config"],
        plan,
        plan.folds[unit[0]],
        unit[1],
        split_keys=with_split_keys,
    )
    if path is not None:
        done.save(path, key)  # written by the worker: a unit survives the parent being killed
    return done


def _worker_units(
    units: list[tuple[tuple[int, str], str, Path | None, bool]],
) -> list[UnitResult]:
    """:func:`_worker_unit` for each unit in turn, in this worker (so they share its memo)."""
    return [_worker_unit(*arguments) for arguments in units]


def _worker_records(
    name: str,
    family: str,
    per_user: PerUser,
    tops: Tops,
    n_users: dict[tuple[str, int | None, str], int],
) -> list[dict[str, Any]]:
    plan: Plan = _WORKER["plan"]
    return method_records(name, family, per_user, tops, n_users, plan.shots_list, _WORKER["config"])
