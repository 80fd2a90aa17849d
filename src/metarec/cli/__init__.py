"""The ``metarec`` command: thin commands that parse, call the library, and print.

Errors the library raises on purpose (:class:`~metarec.errors.MetarecError`) exit with code 2 and
one line on stderr; anything else is a bug and keeps its traceback. Commands are grouped by what
they work on (data, model, bench, serve) and import the library inside their bodies, so that
``metarec --help`` does not pay for torch.
"""

import importlib

from metarec.cli.app import app

# registers the commands, in --help's order
for _group in ("data", "model", "bench", "serve", "check"):
    importlib.import_module(f"metarec.cli.{_group}")


def main() -> None:
    """Entry point of the ``metarec`` script."""
    app()


__all__ = ["app", "main"]
