"""Cross-check `lws eval fdb-metrics` against the official Full-Duplex-Bench v1 scripts on the same files.

    .venv/bin/python benchmarks/fdb_official_check.py --official ~/Full-Duplex-Bench TREE

``--official`` is a checkout of DanielLin94144/Full-Duplex-Bench the user has (its
``v1_v1.5/evaluation`` folder; nothing from it is copied into this project).  ``TREE``
is a Full-Duplex-Bench tree with ``output.json``/``output.wav`` per sample, e.g. the
output of ``lws eval fdb``.  The tree is copied to a scratch directory first (the
official interruption script writes ``rating.json`` into sample folders), then for
every task folder:

* the official ``eval_<task>.py`` runs in a subprocess (cwd = the official
  evaluation folder, so the backchannel script finds its ``icc_gt_distribution.json``);
* our ``evaluate_tree`` runs on the same copy, with that same distribution file as the
  JSD reference;

and the two are printed side by side.  Exit status 1 on any difference beyond
``--tol`` (default 1e-6), 2 on a usage error.

How the official numbers are read.  The official scripts only print their results
(the backchannel one to 4 decimals), so a small wrapper of ours imports each official
module and records, without changing them, the lists its final averages are taken
over: the module's global ``sum`` (pause, turn-taking, interruption:
``sum(x) / len(x)``) and ``np.mean`` (backchannel) are wrapped to note their argument.
The official value is then ``sum(x) / len(x)`` / ``np.mean(x)`` of exactly that list;
an empty list is "undefined" (the official script stops with ZeroDivisionError there;
ours reports null — counted as agreement).

Stand-ins, used only inside this check and said so in its output:

* ``torchaudio.load`` (the official backchannel script's WAV reader) is given by a
  soundfile-based shim when the interpreter has no torchaudio (same float32 scaling
  of PCM-16).
* user interruption needs an OpenAI client for its relevance rating; the check passes
  the official function a stub client that always answers a fixed rating
  (``--interruption-rating``, default 3) and gives our side the same fixed answer, so
  TOR and latency are compared for real and the rating only checks the parsing and
  averaging.  ``--skip-interruption`` leaves the task out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# Our wrapper around one official module (runs in the subprocess; imports the official code, copies none of it).
_WRAPPER = r"""
import json, sys, types
task, root, rating = sys.argv[1], sys.argv[2], int(sys.argv[3])
recorded = []
import builtins
def _sum(xs, *a):
    xs = list(xs)
    recorded.append([float(x) for x in xs])
    return builtins.sum(xs, *a)
if task == "backchannel":
    import numpy
    import eval_backchannel as m
    class _NP:
        def __getattr__(self, name):
            return getattr(numpy, name)
        def mean(self, xs, *a, **k):
            recorded.append([float(x) for x in xs])
            return numpy.mean(xs, *a, **k)
    m.np = _NP()
    call = lambda: m.eval_backchannel(root)
elif task == "user_interruption":
    import eval_user_interruption as m
    m.sum = _sum
    text = f"Analysis: fixed stand-in verdict of fdb_official_check.py.\nI would rate the AI's response as {rating}"
    msg = types.SimpleNamespace(content=text)
    resp = types.SimpleNamespace(choices=[types.SimpleNamespace(message=msg)])
    client = types.SimpleNamespace(chat=types.SimpleNamespace(completions=types.SimpleNamespace(create=lambda **kw: resp)))
    call = lambda: m.eval_user_interruption(root, client)
else:
    m = __import__("eval_" + task)
    m.sum = _sum
    call = lambda: getattr(m, "eval_" + task)(root)
error = None
try:
    call()
except ZeroDivisionError as e:
    error = f"ZeroDivisionError: {e}"
print("FDB_OFFICIAL_RECORD " + json.dumps({"lists": recorded, "error": error}))
"""

_TORCHAUDIO_SHIM = '''"""Stand-in for torchaudio.load written by fdb_official_check.py (soundfile; float32 like torchaudio)."""
import soundfile as _sf
import torch as _torch


def load(path, *args, **kwargs):
    data, sr = _sf.read(str(path), dtype="float32", always_2d=True)
    return _torch.from_numpy(data.T.copy()), sr
'''

# The order in which each official script averages its lists -> our metric names (after the task prefix).
ORDER = {
    "pause_handling": ["tor"],
    "smooth_turn_taking": ["tor", "latency_s"],
    "user_interruption": ["relevance", "tor", "latency_s"],
    "backchannel": ["jsd", "tor", "frequency"],
}
SCRIPTS = {t: f"eval_{t}.py" for t in ORDER}


def find_eval_dir(official: Path) -> Path:
    for cand in (official, official / "v1_v1.5" / "evaluation", official / "evaluation"):
        if all((cand / s).is_file() for s in SCRIPTS.values()):
            return cand
    raise SystemExit(f"error: {official}: no official evaluation scripts (v1_v1.5/evaluation/eval_*.py) found")


def needs_torchaudio_shim(python: str) -> bool:
    return subprocess.run([python, "-c", "import torchaudio"], capture_output=True).returncode != 0


def run_official(python: str, eval_dir: Path, task: str, task_dir: Path, rating: int, shim_dir: Path | None) -> tuple[dict[str, Any], str, str | None]:
    """One official script on one task folder -> ({metric: value or None}, stdout tail, error or None)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    paths = [str(eval_dir)] + ([str(shim_dir)] if shim_dir else []) + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    p = subprocess.run(
        [python, "-c", _WRAPPER, task, str(task_dir), str(rating)], cwd=eval_dir, env=env, capture_output=True, text=True, timeout=1800
    )
    tail = (p.stdout + p.stderr)[-1500:]
    rec = next((json.loads(line.split(" ", 1)[1]) for line in p.stdout.splitlines() if line.startswith("FDB_OFFICIAL_RECORD ")), None)
    if p.returncode != 0 or rec is None:
        return {}, tail, f"exit {p.returncode}"
    values: dict[str, Any] = {}
    for name, xs in zip(ORDER[task], rec["lists"], strict=False):
        values[name] = (sum(xs) / len(xs)) if xs else None
    for name in ORDER[task][len(rec["lists"]) :]:
        values[name] = "not reached"  # the script stopped (ZeroDivisionError) before averaging this one
    return values, tail, rec["error"]


def ours(tree: Path, reference: Path | None, rating: int, with_interruption: bool) -> dict[str, dict[str, Any]]:
    """Our evaluate_tree on the same copy -> {task folder name: {metric: value}}."""
    from lws_core.eval.fdb_metrics import detect_task, evaluate_tree, metric_key, sample_dirs, task_dirs

    text = f"Analysis: fixed stand-in verdict of fdb_official_check.py.\nI would rate the AI's response as {rating}"
    judge = (lambda system, user: text) if with_interruption else None
    flat = evaluate_tree(tree, judge=judge, reference_path=reference, write=False)
    out: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for td in task_dirs(tree):  # the same folder order and key suffixes as evaluate_tree
        task = detect_task(sample_dirs(td)[0])
        if task == "v1.5":
            continue
        key = metric_key(task)
        if key in seen:
            key = f"{key}_{td.name}"
        seen.add(metric_key(task))
        out[td.name] = {m: flat.get(f"{key}_{m}") for m in ORDER[task]}
    return out


def same(a: Any, b: Any, tol: float) -> bool:
    undefined = (None, "not reached")
    if a in undefined or b in undefined or (isinstance(b, float) and math.isnan(b)):
        return (a is None) and (b is None or (isinstance(b, float) and math.isnan(b)))
    return abs(float(a) - float(b)) <= tol


def _fmt(v: Any) -> str:
    return "null" if v is None else (f"{v:.9g}" if isinstance(v, float) else str(v))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree", type=Path, help="Full-Duplex-Bench tree with output.json/output.wav per sample (e.g. `lws eval fdb --out`).")
    ap.add_argument("--official", type=Path, required=True, help="Checkout of DanielLin94144/Full-Duplex-Bench (or its v1_v1.5/evaluation).")
    ap.add_argument("--python", default=sys.executable, help="Interpreter for the official scripts (needs numpy, scipy, tqdm, silero-vad).")
    ap.add_argument("--tol", type=float, default=1e-6, help="Largest accepted |official - ours| per metric.")
    ap.add_argument("--interruption-rating", type=int, default=3, help="Fixed rating of the stand-in judge for user interruption.")
    ap.add_argument("--skip-interruption", action="store_true", help="Leave user interruption out (its official script needs a judge).")
    args = ap.parse_args(argv)
    if not args.tree.is_dir():
        print(f"error: tree not found: {args.tree}", file=sys.stderr)
        return 2
    eval_dir = find_eval_dir(args.official)
    reference: Path | None = eval_dir / "icc_gt_distribution.json"
    if not reference.is_file():
        reference = None  # only the backchannel script reads it (it fails there without it)
    from lws_core.eval.fdb_metrics import detect_task, sample_dirs, task_dirs

    with tempfile.TemporaryDirectory(prefix="fdb_official_check.") as scratch:
        copy = Path(scratch) / "tree"
        shutil.copytree(args.tree, copy, ignore=shutil.ignore_patterns("metrics.json", "rating.json", "judge_cache"))
        shim = None
        if needs_torchaudio_shim(args.python):
            shim = Path(scratch) / "shim"
            (shim / "torchaudio").mkdir(parents=True)
            (shim / "torchaudio" / "__init__.py").write_text(_TORCHAUDIO_SHIM)
        print(f"official scripts: {eval_dir}")
        print(f"tree: {args.tree} (run on a copy)   python: {args.python}   tol: {args.tol:g}")
        if shim:
            print("note: no torchaudio in that interpreter; the backchannel script reads WAVs through a soundfile shim of torchaudio.load")
        ours_all = ours(copy, reference, args.interruption_rating, not args.skip_interruption)
        rows: list[tuple[str, str, Any, Any, bool]] = []
        notes: list[str] = []
        for td in task_dirs(copy):
            task = detect_task(sample_dirs(td)[0])
            if task == "v1.5":
                notes.append(f"{td.name}: v1.5 (behaviour/timing scripts need an LLM judge and ASR): not compared")
                continue
            if task == "user_interruption" and args.skip_interruption:
                notes.append(f"{td.name}: skipped (--skip-interruption)")
                continue
            if task == "user_interruption":
                notes.append(f"{td.name}: relevance from a stand-in judge with a fixed rating of {args.interruption_rating} (both sides)")
            off, tail, err = run_official(args.python, eval_dir, task, td, args.interruption_rating, shim)
            if err and not off:
                print(f"\nofficial {SCRIPTS[task]} failed on {td.name} ({err}):\n{tail}")
                rows += [(td.name, m, "failed", ours_all[td.name][m], False) for m in ORDER[task]]
                continue
            if err:
                notes.append(f"{td.name}: official script stopped with {err} (an empty average: undefined)")
            for m in ORDER[task]:
                o, u = off.get(m), ours_all[td.name][m]
                rows.append((td.name, m, o, u, same(o, u, args.tol)))
    w = max([len(r[0]) for r in rows] + [6])
    print(f"\n{'folder':<{w}}  {'metric':<10}  {'official':>14}  {'ours':>14}  {'|diff|':>10}  ok")
    for name, m, o, u, ok in rows:
        diff = abs(float(o) - float(u)) if isinstance(o, int | float) and isinstance(u, int | float) else None
        print(f"{name:<{w}}  {m:<10}  {_fmt(o):>14}  {_fmt(u):>14}  {_fmt(diff):>10}  {'yes' if ok else 'NO'}")
    for n in notes:
        print(f"note: {n}")
    bad = [r for r in rows if not r[4]]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} metrics agree within {args.tol:g}" + ("" if not bad else f"; {len(bad)} MISMATCH"))
    return 1 if bad or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
