"""Entry point of the `lws` command: registers each area's commands, turns user errors into one line."""

from __future__ import annotations

import os
import sys
from typing import Annotated, NoReturn

import click
import typer

from lws_core import __version__
from lws_core.cli import (
    config_cmd,
    data_cmd,
    eval_cmd,
    ops_cmd,
    pipeline_cmd,
    pretrain_cmd,
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
app.add_typer(pretrain_cmd.app, name="pretrain")
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


def _click_error_types() -> tuple[type[Exception], ...]:
    """Usage-error base classes the parser may raise.

    typer 0.29 vendors its own copy of click (``typer._click``), so its usage errors
    (missing argument, unknown option, bad value, no args) are *not* subclasses of
    ``click.ClickException``; catching only the latter let them escape as tracebacks.
    Both are caught, so a typer that goes back to plain click keeps working.
    """
    types: list[type[Exception]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as TyperClickException
    except ImportError:  # pragma: no cover - a typer that uses click itself
        pass
    else:
        types.append(TyperClickException)
    return tuple(types)


def run(argv: list[str] | None = None) -> None:
    """Console entry point: user mistakes print one line (usage errors a usage message) and exit 2.

    ``standalone_mode=False`` lets LWSError reach this handler, but it also makes typer
    *return* the code of a ``typer.Exit`` instead of exiting with it, so the return
    value is the exit status (no command returns anything else); success returns normally
    so in-process callers (tests) need not catch SystemExit(0).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        rv = app(args=argv, standalone_mode=False)
    except LWSError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (click.exceptions.Exit, typer.Exit) as e:
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except _click_error_types() as e:
        e.show()  # type: ignore[attr-defined]  # "Usage: ... Error: ..." on stderr
        sys.exit(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    if isinstance(rv, int) and rv != 0:
        sys.exit(rv)


def main() -> NoReturn:
    """Console entry point (``lws``, ``python -m lws_core.cli.main``): :func:`run`, then exit.

    A command that leaves nothing behind (:func:`lws_core.cli.common.skip_teardown`, e.g.
    ``lws simulate``) ends the process without the interpreter's teardown: freeing the ~3,000
    modules torch and transformers bring takes 1-2 s on 2 cores (measured in
    ``benchmarks/results/startup.md``), all of it after the outputs are published. The exit
    handlers still run (logging, tqdm, MLflow, weakref finalizers); only the module teardown and
    the last garbage collection are skipped, and only while no other non-daemon thread runs.
    In-process callers (tests) use :func:`run`, which always returns or raises SystemExit.
    """
    from lws_core.cli.common import teardown_skippable

    code: int | str | None = 0
    try:
        run()
    except SystemExit as e:
        code = e.code
    if teardown_skippable():
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: int | str | None) -> NoReturn:
    """What ``sys.exit(code)`` does at the end of a program, less the interpreter teardown."""
    import atexit

    if isinstance(code, str):  # SystemExit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # noqa: SLF001 - the documented handlers, run as a normal exit would
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
