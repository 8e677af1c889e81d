"""`lws data pull` / `lws data push`: datasets and checkpoints by DVC hash (the hash lineage records)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lws_core.cli.common import ConfigOpt, SetOpt, console, out, resolve_config


def data_pull(
    version: Annotated[str, typer.Option("--version", help="DVC hash (as recorded in the model's lineage tags).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Empty or new directory to restore into.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Bring a versioned dataset (or checkpoint) back from the DVC remote."""
    from lws_core.ops.versioning import pull_version, remote_url

    cfg = resolve_config(config, set_)
    pull_version(cfg, version, out_dir)
    out.print(f"restored {version} from {remote_url(cfg)} into {out_dir}")


def data_push(
    path: Annotated[Path, typer.Argument(help="Dataset or model directory to version.")],
    kind: Annotated[str, typer.Option("--kind", help="Name of the tracked slot: dataset or model.")] = "dataset",
    hash_file: Annotated[
        Path | None,
        typer.Option("--hash-file", help="Also write the hash to this file (a `dvc repro` stage output the register stage reads)."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Version a directory with DVC and push it to the remote; prints its hash (alone on stdout, for scripts)."""
    from lws_core.ops.versioning import remote_url, version_path

    cfg = resolve_config(config, set_)
    md5 = version_path(cfg, path, kind)
    if hash_file is not None:
        write_text_atomic(hash_file, md5 + "\n")
    console.print(f"pushed {path} to {remote_url(cfg)}")
    typer.echo(md5)


def write_text_atomic(path: Path, text: str) -> None:
    """Temp file + rename: a stage output is either absent or complete (DVC caches what it finds)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
