"""The ``metarec`` command's app, its error handling and shared options.

Errors the library raises on purpose (:class:`~metarec.errors.MetarecError`) exit with code 2 and
one line on stderr; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from metarec.errors import MetarecError

app = typer.Typer(
    name="metarec",
    help="Meta-learned recommendations for new categories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from metarec import __version__

        typer.echo(f"metarec {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Meta-learned recommendations for new categories."""


console = Console(soft_wrap=True)  # long paths and messages stay on one line
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def command(fn: F) -> F:
    """Register a command whose library errors exit with code 2 and one line on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MetarecError as exc:
            # escaped: messages hold user input and brackets ("metarec[tracking]", names)
            err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc

    app.command()(wrapper)
    return fn


StoreOption = Annotated[Path, typer.Option("--store", help="DuckDB store file.")]
ModelOption = Annotated[Path, typer.Option("--model", help="Model folder (from `metarec train`).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
