"""Start-up time of `lws simulate` and `lws serve`, each in fresh processes.

A user waits for start-up on every `lws simulate` and every server (re)start, and with a
tiny model start-up dwarfs the compute: ten 1 s units take ~0.35 s of engine time. This
benchmark splits that wait into milestones, each measured from the moment the parent
spawns the child:

- ``cli``: interpreter and the CLI's own imports done (``lws_core.cli.main`` imported);
- ``command``: the command body runs (arguments parsed; its first lazy import begins);
- ``engine``: the engine module is imported (torch, transformers' cache);
- ``model``: ``Engine.from_dir`` returned (config, model code, weights, tokenizer);
- ``first unit``: the first ``StreamingSession.step`` returned;
- ``outputs``: ``simulate_file`` returned (every unit, output files, timeline.png);
- ``total``: the process exited.

The milestones come from a small driver (``-c``) that runs the same entry point as the
``lws`` script, ``lws_core.cli.main.run``, with an import hook that wraps the engine's
methods once their module loads; so nothing in the package knows it is measured. The console
entry point itself (``python -m lws_core.cli.main``) is timed too, as a check that the driver adds
nothing. Run with ``PYTHONPATH=<another checkout>`` to time that tree (a "before" figure). ``lws serve``
is timed from spawn until ``GET /healthz`` answers 200 (uvicorn answers only after the
app's start-up, which includes the engine's one-unit warm-up).

The machine may be shared: each row gives wall time (what a user waits) and the child's
CPU time, user + system, from ``getrusage(RUSAGE_CHILDREN)`` (what it costs; a busy
neighbour stretches wall time far more than CPU time). The load average is recorded.

    .venv/bin/python benchmarks/startup.py --model MODEL_DIR [--wav IN.wav] [--repeats 5] [--registry]
        [--one-thread] [--label after] [--write] [--out benchmarks/results/startup.md]
    .venv/bin/python benchmarks/startup.py --model MODEL_DIR --compare BEFORE_TREE AFTER_TREE --label compare --write

``--compare`` times two checkouts (e.g. ``git archive <commit> lws_core | tar -x -C /tmp/before``)
alternately, run by run, which is the fair before/after on a machine whose load drifts.

``--registry`` also times ``--model models:/lws@champion`` through a throwaway SQLite MLflow
registry (the model logged as the project's pyfunc, aliased champion). ``--write`` replaces the
file's section for ``--label``; without it the table is only printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
LWS = [PY, "-m", "lws_core.cli.main"]  # the console entry point of whichever tree PYTHONPATH selects

# The driver: same entry point as the `lws` console script, plus milestones written to $LWS_MARKS
# after each one (a server is stopped by a signal, so nothing waits for the end to write them).
DRIVER = r"""
import json, os, sys, time
T = {"interp": time.time()}
_path = os.environ["LWS_MARKS"]
def mark(name):
    if name not in T:
        T[name] = time.time()
        with open(_path, "w") as f:
            json.dump(T, f)
mark("interp")
import importlib.abc, importlib.machinery
def _wrap(mod):
    E = mod.Engine
    raw = E.__dict__["from_dir"].__func__
    def from_dir(cls, *a, **k):
        r = raw(cls, *a, **k)
        mark("model")
        return r
    E.from_dir = classmethod(from_dir)
    S = mod.StreamingSession
    step = S.step
    def step_marked(self, *a, **k):
        r = step(self, *a, **k)
        mark("first_unit")
        return r
    S.step = step_marked
    sim = E.simulate_file
    def simulate_file(self, *a, **k):
        r = sim(self, *a, **k)
        mark("outputs")
        return r
    E.simulate_file = simulate_file
class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "lws_core.engine":
            mark("command")
        if name != "lws_core.engine.engine":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            mark("engine")
            _wrap(module)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, _Hook())
import lws_core.cli.main as cli
mark("cli")
sys.argv = ["lws", *sys.argv[1:]]
getattr(cli, "main", cli.run)()  # what the `lws` script calls (older trees: run, then a normal exit)
"""

MILESTONES = ["cli", "command", "engine", "model", "first_unit", "outputs", "total"]


@dataclass
class Sample:
    wall: dict[str, float] = field(default_factory=dict)  # milestone -> seconds since spawn
    cpu_s: float = 0.0


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_timed(argv: list[str], cwd: Path, env: dict[str, str], marks: Path | None = None) -> Sample:
    """One fresh process to its end; milestones (if the driver wrote them) relative to spawn."""
    if marks is not None:
        marks.unlink(missing_ok=True)
    c0 = child_cpu()
    t0 = time.time()
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    t1 = time.time()
    cpu = child_cpu() - c0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({p.returncode}):\n{p.stderr[-3000:]}")
    s = Sample(cpu_s=cpu)
    if marks is not None and marks.is_file():
        s.wall = {k: v - t0 for k, v in json.loads(marks.read_text()).items()}
    s.wall["total"] = t1 - t0
    return s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_once(argv: list[str], cwd: Path, env: dict[str, str], port: int, marks: Path | None, timeout: float = 180.0) -> Sample:
    """Spawn the server, poll /healthz until 200, stop it (SIGINT: uvicorn's clean shutdown)."""
    import httpx

    if marks is not None:
        marks.unlink(missing_ok=True)
    c0 = child_cpu()
    t0 = time.time()
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ready = None
    try:
        with httpx.Client(timeout=1.0) as client:
            while time.time() - t0 < timeout:
                if p.poll() is not None:
                    raise SystemExit(f"server exited ({p.returncode}):\n{p.stderr.read()[-3000:]}")
                try:
                    if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        ready = time.time() - t0
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if ready is None:
        raise SystemExit(f"server not ready within {timeout} s")
    s = Sample(cpu_s=child_cpu() - c0)  # start-up plus a clean shutdown
    if marks is not None and marks.is_file():
        s.wall = {k: v - t0 for k, v in json.loads(marks.read_text()).items()}
    s.wall["ready"] = ready
    return s


def summarize(samples: list[Sample], keys: list[str]) -> dict[str, tuple[float, float]]:
    out = {}
    for k in keys:
        xs = [s.wall[k] for s in samples if k in s.wall]
        if xs:
            out[k] = (statistics.median(xs), max(xs))
    cpus = [s.cpu_s for s in samples]
    out["cpu"] = (statistics.median(cpus), max(cpus))
    return out


def fmt(pair: tuple[float, float] | None) -> str:
    return "–" if pair is None else f"{pair[0]:.2f} / {pair[1]:.2f}"


# -- components: what the floor is made of -------------------------------------------------------------
COMPONENTS = {
    "python, nothing imported": "pass",
    "import lws_core.cli.main (the CLI)": "import lws_core.cli.main",
    "import torch": "import torch",
    "import transformers (lazy top level)": "import torch, transformers",
    "import the Llama + Whisper modeling code (any HF model needs this)": (
        "import transformers.models.llama.modeling_llama, transformers.models.whisper.modeling_whisper"
    ),
    "import lws_core.engine + lws_core.model": "import lws_core.engine, lws_core.model",
    "import matplotlib.pyplot": "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot",
    "import matplotlib.figure + Agg canvas": "import matplotlib.figure, matplotlib.backends.backend_agg",
    "import what transformers' modeling code imports unconditionally (torch._dynamo, torch.distributed.tensor, "
    "scipy.optimize, accelerate)": "import torch._dynamo, torch.distributed.tensor, scipy.optimize, accelerate",
    "import mlflow + MlflowClient (the models:/ path)": "import mlflow; from mlflow.tracking import MlflowClient",
}

# Model construction, imports done first (not timed): the ways to build the same LM from its directory.
CONSTRUCT = r"""
import json, sys, time
import torch
from pathlib import Path
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.llama import modeling_llama  # noqa: F401
from transformers.models.whisper.modeling_whisper import WhisperEncoder  # noqa: F401
from lws_core.model import LWSModel
d = Path(sys.argv[2]); how = sys.argv[1]
t = time.perf_counter()
if how == "lws":
    LWSModel.load(d)
elif how == "from_pretrained":
    AutoModelForCausalLM.from_pretrained(str(d / "lm"), local_files_only=True, dtype=torch.float32)
elif how == "config+load_state_dict":
    m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(d / "lm")), dtype=torch.float32)
    m.load_state_dict(load_file(str(d / "lm" / "model.safetensors")), strict=False)
elif how == "meta+assign":
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(d / "lm")), dtype=torch.float32)
    m.load_state_dict(load_file(str(d / "lm" / "model.safetensors")), strict=False, assign=True)
print(json.dumps({"s": time.perf_counter() - t}))
"""


def components(repeats: int, env: dict[str, str], model: Path) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    rows = []
    for name, stmt in COMPONENTS.items():
        rows.append((name, summarize([run_timed([PY, "-c", stmt], ROOT, env) for _ in range(repeats)], ["total"])))
    for how in ("lws", "from_pretrained", "config+load_state_dict", "meta+assign"):
        secs = []
        for _ in range(repeats):
            p = subprocess.run([PY, "-c", CONSTRUCT, how, str(model)], env=env, capture_output=True, text=True, check=True)
            secs.append(json.loads(p.stdout.strip().splitlines()[-1])["s"])
        rows.append((f"build: {how} (in-process, after imports)", {"total": (statistics.median(secs), max(secs))}))
    return rows


# -- import profile ----------------------------------------------------------------------------------
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def import_profile(argv: list[str], cwd: Path, env: dict[str, str], top: int = 15) -> list[str]:
    """`python -X importtime` of one run: self time summed per package (torch and transformers per
    sub-package), each with the chain that first imported it."""
    p = subprocess.run([PY, "-X", "importtime", *argv], cwd=cwd, env=env, capture_output=True, text=True)
    rows = [(len(m.group(3)) // 2, m.group(4), int(m.group(1))) for m in map(_LINE.match, p.stderr.splitlines()) if m]
    total: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, (_, name, self_us) in enumerate(rows):
        parts = name.split(".")
        pkg = ".".join(parts[:2]) if parts[0] in ("torch", "transformers", "lws_core") and len(parts) > 1 else parts[0]
        total[pkg] = total.get(pkg, 0) + self_us
        first.setdefault(pkg, i)

    def chain(i: int, pkg: str) -> str:  # importtime prints children before their parent
        depth, out = rows[i][0], []
        for d, name, _ in rows[i + 1 :]:
            if d < depth:
                depth = d
                if name != pkg and not name.startswith(pkg + "."):  # who brought the package in
                    out.append(name)
        return " ← ".join(out[:3]) + (" ← …" if len(out) > 3 else "")

    lines = [f"all imports: {sum(total.values()) / 1e6:.2f} s (self time; -X importtime adds its own overhead)", ""]
    lines += ["| package | self time | imported by |", "|---|---|---|"]
    for pkg, us in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| `{pkg}` | {us / 1e3:.0f} ms | {chain(first[pkg], pkg) or '(imported inside a function, at run time)'} |")
    return lines


# -- registry -----------------------------------------------------------------------------------------
def make_registry(work: Path, model: Path) -> Path:
    """A throwaway SQLite registry in ``work/ws`` holding ``model`` as version 1, aliased champion.

    Logged the way ``register_model`` logs (the project's pyfunc with the directory as its artifact),
    without the gate, which needs evaluation scores and is not what is timed here."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lws_core.config import LWSConfig
    from lws_core.ops.pyfunc import ARTIFACT_KEY, LWSPyfunc
    from lws_core.ops.registry import _pip_requirements
    from lws_core.ops.tracking import Tracker
    from lws_core.ops.workspace import ensure_store, tracking_uri

    cfg = LWSConfig().with_overrides({"pipeline.workspace": str(work / "ws")})
    (work / "params.yaml").write_text(cfg.to_yaml())
    uri = tracking_uri(cfg)
    ensure_store(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    tr = Tracker(cfg)
    run_id = tr.client.create_run(tr.experiment_id(), run_name="register").info.run_id
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=LWSPyfunc(), artifacts={ARTIFACT_KEY: str(model)}, pip_requirements=_pip_requirements()
        )
    client = MlflowClient(uri, uri)
    client.create_registered_model(cfg.registry.model_name)
    mv = client.create_model_version(cfg.registry.model_name, info.model_uri, run_id=run_id)
    client.set_registered_model_alias(cfg.registry.model_name, "champion", mv.version)
    return work / "params.yaml"


# -- main -------------------------------------------------------------------------------------------
def synth_wav(path: Path, seconds: float = 9.4) -> Path:
    import numpy as np

    from lws_core.audio import SAMPLE_RATE, get_tts, write_wav

    s = get_tts().synthesize(
        "Hello there. I would like to book a table for two people tomorrow evening at seven, near the river if you can."
    )
    n = int(seconds * SAMPLE_RATE)
    audio = np.concatenate([s.audio, np.zeros(max(0, n - len(s.audio)), dtype=np.float32)])[:n]
    return write_wav(path, audio)


def machine() -> str:
    cpu = "?"
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.platform()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--wav", type=Path, default=None, help="input recording (default: 9.4 s of espeak speech + silence)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--registry", action="store_true", help="also time models:/lws@champion (SQLite registry)")
    ap.add_argument("--one-thread", action="store_true", help="also time lws simulate with OMP_NUM_THREADS=1")
    ap.add_argument("--no-components", action="store_true", help="skip the per-component floor measurements")
    ap.add_argument("--compare", nargs="+", metavar="TREE", help="checkouts (folders holding lws_core) timed "
                    "alternately, simulate and serve only: before/after figures while the load drifts")
    ap.add_argument("--label", default="current")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.md")
    ap.add_argument("--write", action="store_true", help="write the section for --label into --out")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lws-startup-"))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "LWS_MARKS": str(work / "marks.json")}
    model = args.model.resolve()
    wav = args.wav.resolve() if args.wav else synth_wav(work / "in.wav")
    marks = work / "marks.json"
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report: list[str] = []

    def sim_argv(model_arg: str, out: str, extra: list[str] | None = None) -> list[str]:
        return ["simulate", str(wav), "--model", model_arg, "--out", out, "--quiet", *(extra or [])]

    def table(title: str, rows: list[tuple[str, dict[str, tuple[float, float]]]], keys: list[str]) -> None:
        report.extend([f"**{title}** (seconds since spawn, median / max of {args.repeats})", ""])
        report.append("| run | " + " | ".join(keys) + " | CPU (user+sys) |")
        report.append("|---" * (len(keys) + 2) + "|")
        for name, s in rows:
            report.append(f"| {name} | " + " | ".join(fmt(s.get(k)) for k in keys) + f" | {fmt(s.get('cpu'))} |")
        report.append("")
        print("\n".join(report[-len(rows) - 4 :]), flush=True)

    if args.compare:  # trees timed alternately, so a drifting load hits each alike; simulate and serve only
        sims: dict[str, list[Sample]] = {t: [] for t in args.compare}
        serves: dict[str, list[Sample]] = {t: [] for t in args.compare}
        for i in range(args.repeats + 1):  # round 0 warms the page cache and the .pyc files, and is dropped
            for t in args.compare:
                e = {**env, "PYTHONPATH": str(Path(t).resolve())}
                sim = run_timed([PY, "-c", DRIVER, *sim_argv(str(model), str(work / f"x{i}"))], work, e, marks)
                port = free_port()
                srv = serve_once([PY, "-c", DRIVER, "serve", "--model", str(model), "--port", str(port)], work, e, port, marks)
                if i:
                    sims[t].append(sim)
                    serves[t].append(srv)
        table("lws simulate, trees alternated", [(f"`{t}`", summarize(sims[t], MILESTONES)) for t in args.compare], MILESTONES)
        keys = ["engine", "model", "first_unit", "ready"]
        table("lws serve, trees alternated", [(f"`{t}`", summarize(serves[t], keys)) for t in args.compare], keys)
    else:
        # 1. simulate: milestones (driver) and the console script
        run_timed([PY, "-c", DRIVER, *sim_argv(str(model), str(work / "warm"))], work, env, marks)  # page cache, .pyc
        drv = [run_timed([PY, "-c", DRIVER, *sim_argv(str(model), str(work / f"o{i}"))], work, env, marks) for i in range(args.repeats)]
        cli = [run_timed([*LWS, *sim_argv(str(model), str(work / f"c{i}"))], work, env) for i in range(args.repeats)]
        rows = [("`lws simulate` (milestones)", summarize(drv, MILESTONES)), ("`python -m lws_core.cli.main simulate`", summarize(cli, ["total"]))]
        if args.one_thread:  # torch's default is one thread per core; a tiny model's units are too small to share
            env1 = {**env, "OMP_NUM_THREADS": "1"}
            one = [run_timed([PY, "-c", DRIVER, *sim_argv(str(model), str(work / f"t{i}"))], work, env1, marks) for i in range(args.repeats)]
            rows.append(("`lws simulate`, `OMP_NUM_THREADS=1`", summarize(one, MILESTONES)))

        # 2. simulate through the registry
        if args.registry:
            params = make_registry(work, model)
            uri = ["--config", str(params)]
            first = run_timed([PY, "-c", DRIVER, *sim_argv("models:/lws@champion", str(work / "r-first"), uri)], work, env, marks)
            reg = [
                run_timed([PY, "-c", DRIVER, *sim_argv("models:/lws@champion", str(work / f"r{i}"), uri)], work, env, marks)
                for i in range(args.repeats)
            ]
            rows.append(("`models:/lws@champion`, first (downloads)", summarize([first], MILESTONES)))
            rows.append(("`models:/lws@champion`, cached copy", summarize(reg, MILESTONES)))
        table("lws simulate", rows, MILESTONES)

        # 3. serve: spawn until /healthz answers
        srows = []
        for label, argv_of in (
            ("`lws serve` (milestones)", lambda port: [PY, "-c", DRIVER, "serve", "--model", str(model), "--port", str(port)]),
            ("`python -m lws_core.cli.main serve`", lambda port: [*LWS, "serve", "--model", str(model), "--port", str(port)]),
        ):
            samples = []
            for _ in range(args.repeats):
                port = free_port()
                samples.append(serve_once(argv_of(port), work, env, port, marks if "milestones" in label else None))
            srows.append((label, summarize(samples, ["cli", "command", "engine", "model", "first_unit", "ready"])))
        table("lws serve", srows, ["cli", "command", "engine", "model", "first_unit", "ready"])

    # 4. components and import profile
    if not args.no_components and not args.compare:
        crows = components(args.repeats, env, model)
        report.extend([f"**What it is made of** (fresh processes, median / max of {args.repeats}; build rows in-process)", ""])
        report += ["| part | wall | CPU (user+sys) |", "|---|---|---|"]
        report += [f"| {n} | {fmt(s.get('total'))} | {fmt(s.get('cpu'))} |" for n, s in crows]
        report.append("")
    if not args.compare:
        report.extend(["**Heaviest imports of one `lws simulate`** (`python -X importtime`)", ""])
        report += import_profile(["-c", DRIVER, *sim_argv(str(model), str(work / "imp"))], work, env)
        report.append("")
        print("\n".join(report[-20:]), flush=True)

    load_after = os.getloadavg()
    head = [
        f"## {args.label}: {started}",
        "",
        f"Machine: {machine()}. Load average (1/5/15 min) before {load_before[0]:.2f} / {load_before[1]:.2f} / "
        f"{load_before[2]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}. "
        f"Model: `{args.model}`; input: {'`' + str(args.wav) + '`' if args.wav else '9.4 s of espeak speech and silence'}.",
        "",
        "    " + " ".join([*([f"PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []),
                          ".venv/bin/python", "benchmarks/startup.py", "--model", str(args.model), *(["--wav", str(args.wav)] if args.wav else []),
                          "--repeats", str(args.repeats), *(["--registry"] if args.registry else []),
                          *(["--no-components"] if args.no_components else []),
                          *(["--one-thread"] if args.one_thread else []), *(["--compare", *args.compare] if args.compare else []),
                          "--label", args.label, "--write"]),
        "",
    ]
    section = "\n".join(head + report).rstrip() + "\n"
    if args.write:
        write_section(args.out, args.label, section)
        print(f"-> {args.out}")
    shutil.rmtree(work, ignore_errors=True)


def write_section(path: Path, label: str, section: str) -> None:
    """Replace the ``## label:`` section of the results file (or append it), keeping the rest."""
    text = path.read_text() if path.is_file() else "# Start-up time of `lws simulate` and `lws serve`\n"
    parts = [p for p in re.split(r"(?m)^(?=## )", text) if p.strip() and not p.startswith(f"## {label}:")]
    path.write_text("".join(p.rstrip("\n") + "\n\n" for p in parts) + section)


if __name__ == "__main__":
    main()
