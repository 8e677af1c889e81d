"""`lws schema`: look at sessions as tokens and as pictures; build tokenizers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lws_core.cli.common import ConfigOpt, out, resolve_config

app = typer.Typer(help="Token schema tools: encode, decode, validate, render, tokenizer.", no_args_is_help=True)

SessionArg = Annotated[Path, typer.Argument(help="Session timeline JSON file.")]
TokOpt = Annotated[
    Path | None, typer.Option("--tokenizer", help="Tokenizer directory (default: a BPE trained on the session's text).")
]


def _tokenizer(path: Path | None, texts: list[str]):  # noqa: ANN202
    from lws_core.schema import SchemaTokenizer, train_bpe_tokenizer

    if path is not None:
        return SchemaTokenizer.load(path)
    return train_bpe_tokenizer(texts or ["hello"], vocab_size=300)


def _texts(session) -> list[str]:  # noqa: ANN001
    return [session.system or ""] + [u.write for u in session.units] + [u.say for u in session.units]


@app.command("encode")
def encode_cmd(session: SessionArg, tokenizer: TokOpt = None, config: ConfigOpt = None, ids_out: Annotated[Path | None, typer.Option("--ids-out", help="Write the token ids as JSON here.")] = None) -> None:
    """Print a session's token stream, one unit per line, with labelled positions marked."""
    from lws_core.schema import encode, load_session

    cfg = resolve_config(config)
    s = load_session(session)
    tok = _tokenizer(tokenizer, _texts(s))
    enc = encode(s, tok, cfg.schema_.audio_tokens_per_unit)
    strings = tok.token_strings(enc.input_ids)
    line: list[str] = []
    for i, t in enumerate(strings):
        if i in enc.unit_starts and line:
            out.print(" ".join(line), markup=False, highlight=False, soft_wrap=True)
            line = []
        line.append(t if enc.labels[i] == -100 else f"[{t}]")
    if line:
        out.print(" ".join(line), markup=False, highlight=False, soft_wrap=True)
    out.print(f"# {len(enc)} tokens, {sum(lab != -100 for lab in enc.labels)} labelled ([...]), {len(s.units)} units")
    if ids_out:
        ids_out.write_text(json.dumps({"input_ids": enc.input_ids}))


@app.command("decode")
def decode_cmd(
    ids_file: Annotated[Path, typer.Argument(help="JSON with 'input_ids' (a list of ints) or a bare list.")],
    tokenizer: Annotated[Path, typer.Option("--tokenizer", help="Tokenizer directory the ids come from.")],
    unit_s: float = 1.0,
) -> None:
    """Parse a token id stream back into a timeline (force-closing cut units) and print it."""
    from lws_core.errors import InputError
    from lws_core.schema import SchemaTokenizer, parse

    try:
        raw = json.loads(ids_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{ids_file}: cannot read token ids ({e})") from None
    ids = raw.get("input_ids") if isinstance(raw, dict) else raw
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise InputError(f"{ids_file}: expected a list of integer token ids")
    tok = SchemaTokenizer.load(tokenizer)
    for i, u in enumerate(parse(ids, tok)):
        flag = " (force-closed: " + "; ".join(u.issues) + ")" if u.forced else ""
        out.print(f"{i * unit_s:6.2f}s {u.state:6} write={u.write!r} say={u.say!r}{' <eot>' if u.eot else ''}{flag}", markup=False, highlight=False, soft_wrap=True)


@app.command("validate")
def validate_cmd(session: SessionArg, config: ConfigOpt = None, tokenizer: TokOpt = None) -> None:
    """Check a session against the schema invariants; exit 1 listing every violation."""
    from lws_core.schema import load_session, validate

    cfg = resolve_config(config)
    s = load_session(session)
    tok = _tokenizer(tokenizer, _texts(s)) if tokenizer else None
    v = validate(
        s, cfg.schema_.max_write_tokens, cfg.schema_.max_say_tokens, count_tokens=tok.count if tok else None
    )
    for item in v:
        out.print(str(item), markup=False, soft_wrap=True)
    if v:
        raise typer.Exit(1)
    out.print(f"{session}: valid ({len(s.units)} units)")


@app.command("render")
def render_cmd(
    session: SessionArg,
    png: Annotated[Path, typer.Option("--png", help="Output PNG path.")] = Path("timeline.png"),
    max_units: int = 40,
) -> None:
    """Draw the session as lanes over time (user speech, state, written, spoken)."""
    from lws_core.schema import load_session
    from lws_core.schema.render import render_timeline

    s = load_session(session)
    render_timeline(s, png, max_units=max_units)
    out.print(f"wrote {png}")


@app.command("tokenizer")
def tokenizer_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Directory to save the schema tokenizer in.")],
    extend: Annotated[Path | None, typer.Option("--extend", help="Extend this local HF tokenizer instead of training one.")] = None,
    corpus: Annotated[Path | None, typer.Option("--corpus", help="Text file to train a BPE on (one document per line).")] = None,
    vocab_size: int = 1024,
) -> None:
    """Train a byte-level BPE (offline) or extend an existing tokenizer with the schema tokens."""
    from lws_core.errors import InputError
    from lws_core.schema import extend_tokenizer, train_bpe_tokenizer

    if extend is not None:
        tok = extend_tokenizer(extend)
    else:
        if corpus is None:
            raise InputError("give --corpus FILE to train a tokenizer, or --extend DIR to extend one")
        if not corpus.is_file():
            raise InputError(f"corpus file not found: {corpus}")
        lines = [ln for ln in corpus.read_text(errors="replace").splitlines() if ln.strip()]
        if not lines:
            raise InputError(f"{corpus}: no text")
        tok = train_bpe_tokenizer(lines, vocab_size=vocab_size)
    tok.save(out_dir)
    out.print(f"saved tokenizer ({tok.vocab_size} tokens, schema ids {tok.special.as_mapping()}) to {out_dir}", markup=False)
