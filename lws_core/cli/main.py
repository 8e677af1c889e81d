"""Entry point of the `lws` command: registers each area's commands, turns user errors into one line."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import click
import typer

from lws_core import __version__
from lws_core.cli import (
    config_cmd,
    data_cmd,
    eval_cmd,
    ops_cmd,
    pipeline_cmd,
    schema_cmd,
    serve_cmd,
    simulate_cmd,
    train_cmd,
)
from lws_core.errors import LWSError

app = typer.Typer(
    name="lws",
    help="Listen-Write-Speak: synthesize data, train, simulate, evaluate, serve and retrain full-duplex speech LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(schema_cmd.app, name="schema")
data_cmd.app.command("pull")(ops_cmd.data_pull)
data_cmd.app.command("push")(ops_cmd.data_push)
app.add_typer(data_cmd.app, name="data")
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(pipeline_cmd.app, name="pipeline")
app.command("train")(train_cmd.train)
app.command("simulate")(simulate_cmd.simulate)
app.command("serve")(serve_cmd.serve)


def _version(value: bool) -> None:
    if value:
        from lws_core.schema import SCHEMA_VERSION

        typer.echo(f"lws {__version__} (schema {SCHEMA_VERSION})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Listen-Write-Speak command line."""


def run() -> None:
    """Console entry point: user mistakes print one line and exit 2, never a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(standalone_mode=False)
    except LWSError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run()
