"""Start-up of `lws simulate` / `lws serve`: their path imports no orchestration or training stack, and a
finished `lws simulate` ends without the interpreter's teardown (benchmarks/startup.py has the times;
these tests check what is imported and how the process ends, never how long it takes)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# Heavy packages the serving/simulation path never needs (orchestration, training, plotting), and the
# project layers that pull them in. matplotlib is allowed only once timeline.png is drawn.
NEVER = ("mlflow", "dvc", "kfp", "deepspeed", "datasets", "lws_core.ops", "lws_core.train", "lws_core.data")
NOT_AT_START = (*NEVER, "matplotlib", "lws_core.eval", "lws_core.schema.render")
# what the decode-only (lean) load of a tiny model avoids: transformers' modeling code and what it drags in
NOT_WHEN_LEAN = ("transformers", "torch._dynamo", "torch.distributed.tensor", "accelerate", "scipy")


@pytest.fixture(scope="module")
def model_dir(tiny_cfg, tmp_path_factory):
    import torch

    from lws_core.model import LWSModel

    torch.manual_seed(0)
    return LWSModel.build(tiny_cfg).save(tmp_path_factory.mktemp("startup") / "m")


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    from lws_core.audio import write_wav

    return write_wav(tmp_path_factory.mktemp("startup-in") / "in.wav", np.zeros(24000, dtype=np.float32))


def _hits(loaded: set[str] | list[str], names: tuple[str, ...]) -> list[str]:
    """The loaded modules that are one of ``names`` or inside one of them."""
    return sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in names))


def _child(code: str, *args: str, cwd=None) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_start_up_path_imports_nothing_it_does_not_use(model_dir):
    """Everything `lws simulate` and `lws serve` import before the first unit: the CLI, the engine, the
    server, the model loaded from disk (decode-only, as both commands load it) and wrapped in an engine."""
    p = _child(
        """
        import json, sys
        import lws_core.cli.main, lws_core.cli.simulate_cmd, lws_core.cli.serve_cmd
        import lws_core.serve
        from lws_core.engine import Engine
        engine = Engine.from_dir(sys.argv[1], lean=True)
        engine.session().step(__import__("numpy").zeros(engine.unit_samples, dtype="float32"))
        print(type(engine.model.lm).__name__, json.dumps(sorted(sys.modules)))
        """,
        str(model_dir),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    kind, mods = p.stdout.splitlines()[-1].split(" ", 1)
    loaded = set(json.loads(mods))
    assert kind == "LeanCausalLM"
    assert {"torch", "tokenizers", "lws_core.engine", "lws_core.model.lean", "fastapi"} <= loaded  # the check saw the real path
    bad = _hits(loaded, (*NOT_AT_START, *NOT_WHEN_LEAN))
    assert not bad, f"start-up path imports {bad[:10]}"


# the console entry point, with a canary that only the interpreter's teardown frees
_MAIN = """
    import atexit, json, os, sys

    class Canary:
        def __del__(self, _write=os.write):
            _write(2, b"teardown ran\\n")

    canary = Canary()
    atexit.register(lambda: print("atexit ran " + json.dumps(sorted(sys.modules)), file=sys.stderr))
    from lws_core.cli.main import main
    sys.argv = ["lws", *sys.argv[1:]]
    main()
"""


def test_simulate_ends_without_teardown_and_imports_no_orchestration(model_dir, wav, tmp_path):
    out = tmp_path / "out"
    p = _child(_MAIN, "simulate", str(wav), "--model", str(model_dir), "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 units" in p.stdout  # printed, and flushed into the pipe before the process ended
    assert {f.name for f in out.iterdir()} >= {"output.wav", "output.json", "units.jsonl", "written.md", "timeline.png"}
    assert "atexit ran" in p.stderr  # exit handlers run as on a normal exit...
    assert "teardown ran" not in p.stderr  # ...but the module teardown is skipped
    loaded = json.loads(p.stderr.split("atexit ran ", 1)[1].splitlines()[0])
    assert "matplotlib" in loaded and not _hits(loaded, NEVER)  # the timeline was drawn; nothing else came
    assert not _hits(loaded, ("transformers", "torch._dynamo"))  # the model was loaded decode-only


def test_a_failed_simulate_exits_normally(model_dir, tmp_path):
    """Only a command that finished asks for the fast exit: an error is one line, status 2, full teardown."""
    p = _child(_MAIN, "simulate", str(tmp_path / "missing.wav"), "--model", str(model_dir), "--out", str(tmp_path / "o"))
    assert p.returncode == 2
    assert p.stderr.startswith("error:") and "missing.wav" in p.stderr
    assert "atexit ran" in p.stderr and "teardown ran" in p.stderr
