"""Model commands: train, adapt, recommend, demo."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from metarec.cli.app import (
    JsonOption,
    ModelOption,
    QuietOption,
    StoreOption,
    command,
    console,
)

if TYPE_CHECKING:
    from metarec.serving.recommender import Recommender


@command
def train(
    store: Annotated[
        Path,
        typer.Option("--store", help="DuckDB store file, or a folder written by `metarec export`."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
    hold_out: Annotated[
        list[str] | None, typer.Option("--hold-out", help="Category sealed from training.")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Meta-training steps.")] = None,
    first_order: Annotated[
        bool | None, typer.Option("--first-order/--second-order", help="MAML order.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    algorithm: Annotated[
        str | None,
        typer.Option(
            "--algorithm",
            help="Meta-learning algorithm (meta.algorithm): maml, fomaml, meta_sgd, reptile, "
            "anil or melu_local (docs/META.md).",
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="auto (the default, or the config's `method`): fit the MLP meta-learner and "
            "metarec-ridge, keep the one with the better validation NDCG@10; mlp or ridge: only "
            "that one. --algorithm alone implies mlp.",
        ),
    ] = None,
    quiet: QuietOption = False,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for resumable checkpoints (docs/SCALING.md)."),
    ] = None,
    checkpoint_every: Annotated[
        int, typer.Option(help="Meta-steps between checkpoints.", min=1)
    ] = 50,
    resume: Annotated[
        bool, typer.Option(help="Continue the run checkpointed in --checkpoint-dir.")
    ] = False,
    distributed: Annotated[
        bool,
        typer.Option(
            help="Share each meta-batch across the ranks torchrun started: "
            "`torchrun --nproc-per-node 2 -m metarec.cli train ... --distributed`."
        ),
    ] = False,
    mlflow: Annotated[
        str | None,
        typer.Option(
            "--mlflow",
            envvar="MLFLOW_TRACKING_URI",
            help="Also log the training (config, candidates' validation scores, training "
            "curve, manifest) to this MLflow tracking URI; needs the tracking extra.",
        ),
    ] = None,
) -> None:
    """Train on the store's categories and write the model folder: by default the better, on
    the store's validation categories, of the MLP meta-learner and metarec-ridge."""
    import os

    from metarec.config import MetaConfig, load_config, validated
    from metarec.data.export import open_export, open_store
    from metarec.errors import ConfigError
    from metarec.meta.checkpoint import Checkpointing
    from metarec.meta.distributed import World
    from metarec.meta.model import save_model
    from metarec.selection import CHOICES, MEASURE, train_selected

    if checkpoint_dir is None and resume:
        raise ConfigError("--resume needs --checkpoint-dir, the folder of the run to continue")
    if not distributed and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"launched on {os.environ['WORLD_SIZE']} ranks without --distributed: every rank "
            f"would train alone and write {out}; add --distributed"
        )
    resolved = load_config(config, seed=seed)
    options = {"meta_steps": steps, "first_order": first_order, "algorithm": algorithm}
    # validated (model_copy would not be), so an unknown algorithm names the valid ones
    meta = validated(
        MetaConfig,
        {**resolved.meta.model_dump(), **{k: v for k, v in options.items() if v is not None}},
        "training option",
    )
    resolved = resolved.model_copy(
        update={"hold_out": tuple(hold_out) if hold_out else resolved.hold_out, "meta": meta}
    )
    checkpoint = (
        None
        if checkpoint_dir is None
        else Checkpointing(checkpoint_dir, every=checkpoint_every, resume=resume)
    )
    if mlflow:
        from metarec.tracking import require_mlflow

        require_mlflow()  # before the training, not after it
    chosen = method or ("mlp" if algorithm and resolved.method == "auto" else resolved.method)
    if chosen not in CHOICES:
        raise ConfigError(f"--method must be one of {', '.join(CHOICES)}, got {chosen!r}")
    log = (lambda _: None) if quiet else (lambda line: console.print(f"[dim]{escape(line)}[/]"))
    with World.from_torchrun() if distributed else World() as world:
        # An export is read per category: the sealed categories' interactions are never opened.
        opened = (
            open_export(store, exclude=resolved.hold_out)
            if store.is_dir()
            else open_store(store, read_only=True)
        )
        with opened:
            selection = train_selected(
                opened,
                resolved,
                choice=chosen,  # checked against CHOICES above
                progress=not quiet,
                checkpoint=checkpoint,
                world=world,
                log=log,
            )
        if not world.is_main:
            return  # rank 0 writes the model and reports
    model = selection.model
    save_model(model, out)
    run_id = _log_training(out, mlflow) if mlflow else None
    if len(selection.candidates) > 1:
        table = Table(title=f"validation ({MEASURE})")
        for column in ("method", "NDCG@10", "fit seconds", ""):
            table.add_column(column)
        for candidate in selection.candidates:
            table.add_row(
                candidate.name,
                f"{candidate.validation:.4f}",
                f"{candidate.seconds:.0f}",
                "chosen" if candidate.name == selection.chosen else "",
            )
        console.print(table)
    console.print(
        f"[green]wrote[/] {escape(str(out))}: {selection.chosen} ({escape(selection.reason)}); "
        f"{len(model.splits['train'])} training categories, "
        f"{len(model.splits['validation'])} validation, {len(model.splits['hold_out'])} held out"
        + (f"; {world.size} ranks" if world.size > 1 else "")
        + (f"; MLflow run {run_id}" if run_id else "")
    )


def _log_training(folder: Path, uri: str) -> str:
    """Log the model folder just written to MLflow (its manifest's metadata and the manifest)."""
    from metarec.artifacts import MANIFEST_NAME
    from metarec.tracking import log_training

    manifest = folder / MANIFEST_NAME
    metadata = json.loads(manifest.read_text())["metadata"]
    return log_training(metadata, uri, name=f"train {folder.name}", artifacts=[manifest])


def _parse_time(value: str | None) -> int | None:
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError as exc:
        raise typer.BadParameter(f"expected unix seconds or ISO-8601, got {value!r}") from exc


@command
def adapt(
    model: ModelOption,
    store: StoreOption,
    category: Annotated[
        str, typer.Option(help="Category path, e.g. 'Books > Literature > Poetry'.")
    ],
    as_of: Annotated[
        str | None,
        typer.Option(help="Use interactions up to this time only (unix seconds or ISO-8601)."),
    ] = None,
) -> None:
    """Adapt the meta-model to CATEGORY from its interactions so far."""
    from metarec.data.export import open_store
    from metarec.serving.recommender import Recommender

    with open_store(store, read_only=True) as opened:
        adaptation = Recommender.open(model, opened).adapt(category, as_of=_parse_time(as_of))
    console.print(
        f"[green]adapted[/] {escape(repr(category))} version {adaptation.version} from "
        f"{adaptation.support_size} interactions of {adaptation.n_users} users "
        f"in {adaptation.seconds * 1000:.1f} ms"
    )


@command
def recommend(
    model: ModelOption,
    store: StoreOption,
    category: Annotated[str, typer.Option(help="Category path.")],
    user: Annotated[str | None, typer.Option(help="External user id.")] = None,
    users: Annotated[
        Path | None,
        typer.Option(
            help="File of external user ids, one per line (blank lines skipped, a repeated id "
            "listed once): a list for each (--out)."
        ),
    ] = None,
    all_users: Annotated[
        bool, typer.Option("--all-users", help="A list for every user of the store (--out).")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Parquet file for --users/--all-users: user_id, rank, item_id, score, fallback."
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="How many items.")] = 10,
    keep_disliked: Annotated[
        bool,
        typer.Option(
            "--keep-disliked",
            help="Also recommend items the user interacted with in the category without liking "
            "them (by default every item they interacted with there is left out).",
        ),
    ] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Top-K items of CATEGORY for one USER, or for many users into a Parquet file."""
    from metarec.data.export import open_store
    from metarec.errors import ConfigError
    from metarec.serving.recommender import Recommender

    if (user is not None) + (users is not None) + all_users != 1:
        raise ConfigError("pass exactly one of --user ID, --users FILE or --all-users")
    if user is None and out is None:
        raise ConfigError("--users and --all-users write a table: pass --out recs.parquet")
    with open_store(store, read_only=True) as opened:
        recommender = Recommender.open(model, opened, keep_disliked=keep_disliked)
        if user is None:
            _recommend_many(recommender, category, users, k, out, as_json=as_json, quiet=quiet)
            return
        result = recommender.recommend(user, category, k)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, allow_nan=False))
        return
    title = escape(f"top {k} in {category} for user {user}")
    if result.fallback:
        title += f"  [yellow](fallback: {result.fallback})[/]"
    table = Table("rank", "item", "title", "score", title=title)
    for rank, item in enumerate(result.items, 1):
        table.add_row(
            str(rank), escape(item.item_id), escape(item.title or ""), f"{item.score:.4f}"
        )
    console.print(table)


def _recommend_many(
    recommender: Recommender,
    category: str,
    users: Path | None,
    k: int,
    out: Path | None,
    *,
    as_json: bool,
    quiet: bool,
) -> None:
    """``recommend --users FILE | --all-users --out FILE``: the batch path of the library."""
    import time

    from metarec.errors import DataError
    from metarec.serving.batch import recommend_batch, write_recommendations

    assert out is not None
    if users is not None and not users.is_file():
        raise DataError(f"users file {users} does not exist (one user id per line)")
    ids = None if users is None else [u.strip() for u in users.read_text().splitlines()]
    # blank lines skipped, and a repeated id listed once: a table keyed by (user_id, rank)
    ids = None if ids is None else list(dict.fromkeys(u for u in ids if u))
    started = time.perf_counter()
    table = recommend_batch(recommender, category, ids, k, progress=not quiet)
    write_recommendations(table, out)
    n_users = table["user_id"].nunique()
    fallbacks = table.drop_duplicates("user_id")["fallback"].value_counts().to_dict()
    summary = {
        "out": str(out),
        "category": category,
        "users": int(n_users),
        "rows": len(table),
        "fallbacks": {str(key): int(n) for key, n in fallbacks.items()},
        "seconds": round(time.perf_counter() - started, 3),
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console.print(
        f"[green]wrote[/] {escape(str(out))}: top {k} of {escape(repr(category))} "
        f"for {n_users:,} users "
        f"({len(table):,} rows) in {summary['seconds']:.1f} s"
        + (f"; fallbacks {summary['fallbacks']}" if fallbacks else "")
    )


@command
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the demo writes data, store and model.")
    ] = Path("demo-run"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    steps: Annotated[int | None, typer.Option(help="Meta-training steps.")] = None,
    quiet: QuietOption = False,
) -> None:
    """Simulate a bookstore, meta-train, launch a held-out category, adapt and recommend."""
    from metarec.demo import run_demo

    run_demo(workdir, seed=seed, steps=steps, console=console, progress=not quiet)
