"""Ablations on the same data and compute: full LWS vs no writing while listening vs speech-only.

Each variant is the *same* synthesized dataset with part of the written channel
removed from the labels (audio, states and speech untouched), trained with the
same config (steps, batch, seed) and evaluated on the same held-out test audio:

* ``full``            — the dataset as synthesized;
* ``no_write_listen`` — the notes written while the user is still talking are
  removed (the model only writes once it has the floor);
* ``speech_only``     — every written token removed (no written channel at all).

Written-answer accuracy is 0 by construction without a written channel, so the
comparison metric that is fair to all three is ``spoken_accuracy``: the spoken
answer states the known answer (its key facts), per task family — in particular
on the multi-step families where writing should help.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from lws_core.errors import InputError
from lws_core.schema import Session, Unit

VARIANTS = ("full", "no_write_listen", "speech_only")
COMPARE = ("spoken_accuracy", "task_accuracy", "consistency_rate", "state_accuracy", "schema_valid_rate", "turn_taking_latency_s", "test_loss_say")


def strip_writing(session: Session, variant: str) -> Session:
    """The session's labels for one variant (a new object; the input is not modified)."""
    if variant == "full":
        return session.model_copy(deep=True)
    if variant not in VARIANTS:
        raise InputError(f"unknown ablation variant {variant!r} (known: {', '.join(VARIANTS)})")

    def keep(u: Unit) -> bool:
        return variant == "no_write_listen" and u.state == "speak"

    units = [u if keep(u) else u.model_copy(update={"write": "", "depends_on_word": None}) for u in session.units]
    return session.model_copy(update={"units": units, "meta": {**session.meta, "ablation": variant}}, deep=True)


def transform_dataset(data_dir: str | Path, out_dir: str | Path, variant: str) -> Path:
    """Write a copy of a synthesized dataset with the variant's labels (atomic; other files copied as they are)."""
    from lws_core.data.dataset import load_dataset_dir
    from lws_core.schema import session_from_dict

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    dd = load_dataset_dir(data_dir)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:

        def fn(row: dict[str, Any]) -> dict[str, Any]:
            s = session_from_dict(json.loads(row["session"]), source=f"row {row.get('id', '?')}")
            return {"session": strip_writing(s, variant).model_dump_json()}

        dd.map(fn, desc=f"ablation {variant}").save_to_disk(str(tmp))
        for f in data_dir.iterdir():
            if f.name in dd or f.name == "dataset_dict.json" or (tmp / f.name).exists():
                continue
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, tmp / f.name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def run_ablations(
    cfg,  # noqa: ANN001 - LWSConfig
    data_dir: str | Path,
    out_dir: str | Path,
    variants: tuple[str, ...] = VARIANTS,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Transform, train and evaluate each variant; writes ablation.json, ablation.md and ablation.png."""
    from lws_core.eval.internal import evaluate
    from lws_core.train import train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for v in variants:
        data_v = transform_dataset(data_dir, out_dir / f"data_{v}", v)
        summary = train(cfg, data_v, out_dir / f"model_{v}", progress=progress)
        ev = evaluate(cfg.with_overrides({"eval.fdb_probe": False}), out_dir / f"model_{v}", data_v, out_dir / f"eval_{v}", limit=limit, progress=progress)
        results[v] = {**ev.metrics, "per_family_spoken": ev.per_family_spoken, "train_steps": getattr(summary, "steps", None)}
    write_comparison(results, out_dir)
    return results


def write_comparison(results: dict[str, dict[str, Any]], out_dir: Path) -> Path:
    """ablation.json + a markdown table + a grouped bar chart of spoken accuracy per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out_dir / "ablation.json").write_text(json.dumps(results, indent=1, default=str))
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in COMPARE:
        cells = []
        for n in names:
            v = results[n].get(k)
            cells.append("n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    families = sorted({f for r in results.values() for f in (r.get("per_family_spoken") or {})})
    if families:
        lines += ["", "Spoken accuracy per family:", "", "| family | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for f in families:
            lines.append(f"| {f} | " + " | ".join(_fmt((results[n].get("per_family_spoken") or {}).get(f)) for n in names) + " |")
        fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
        w = 0.8 / len(names)
        for i, n in enumerate(names):
            vals = [(results[n].get("per_family_spoken") or {}).get(f) for f in families]
            ax.bar([j + i * w for j in range(len(families))], [v if isinstance(v, float) and v == v else 0 for v in vals], w, label=n)
        ax.set_xticks([j + w * (len(names) - 1) / 2 for j in range(len(families))], families, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("spoken answer correct")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "ablation.png")
        plt.close(fig)
        lines += ["", "![ablation](ablation.png)"]
    path = out_dir / "ablation.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else f"{v:.3f}"
