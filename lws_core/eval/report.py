"""report.md + PNG plots for an evaluation run (the ops layer logs the directory to MLflow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _pct(v: Any) -> str:
    return f"{100 * v:.1f} %" if isinstance(v, float) else ("n/a" if v is None else str(v))


def _consistency_lines(metrics: dict[str, Any]) -> list[str]:
    """Our three consistency views next to the paper's 92.6 % (a rate without a public definition)."""
    paper = metrics.get("consistency_paper_reference")
    if paper is None and "consistency_rate" not in metrics:
        return []
    paper_s = _pct(paper)
    emb = metrics.get("consistency_embedding_mean")
    return [
        "",
        "## Writing–speaking consistency vs the paper",
        "",
        f"The LWS paper reports {paper_s} writing–speaking consistency without a public definition; ours are the views below.",
        "",
        "| view | ours | paper |",
        "|---|---|---|",
        f"| deterministic: every number said is written ({metrics.get('consistency_checked', 0)} responses) | {_pct(metrics.get('consistency_rate'))} | {paper_s} |",
        f"| judge: spoken and written agree (Yes share) | {_pct(metrics.get('consistency_judge_rate'))} | {paper_s} |",
        f"| embedding: mean cosine spoken vs written (a similarity, not a rate) | {_fmt(emb) if emb is not None else 'not computed'} | – |",
        *(
            [f"| deterministic, `test_seen` (held-out voices, training phrasings; {metrics.get('consistency_checked_seen_phrasing', 0)} responses) "
             f"| {_pct(metrics.get('consistency_rate_seen_phrasing'))} | {paper_s} |"]
            if "consistency_rate_seen_phrasing" in metrics
            else []
        ),
    ]


def family_table(
    per_family: dict[str, float],
    per_family_spoken: dict[str, float],
    per_family_seen: dict[str, float] | None = None,
    per_family_spoken_seen: dict[str, float] | None = None,
) -> list[str]:
    """Markdown lines: task accuracy per family, written and spoken, on test and (when given) test_seen."""
    seen = per_family_seen is not None
    spoken_seen = per_family_spoken_seen or {}
    fams = sorted(set(per_family) | set(per_family_spoken) | set(per_family_seen or {}) | set(spoken_seen))
    if not fams:
        return []
    lines = ["", "## Task accuracy per family", ""]
    if seen:
        lines += [
            "`test`: held-out phrasings and voices; `test_seen`: held-out voices, training phrasings",
            "(metrics `task_accuracy.<family>`, `spoken_accuracy.<family>`, `task_accuracy_seen_phrasing.<family>`,",
            "`spoken_accuracy_seen_phrasing.<family>`).",
            "",
            "| family | written (test) | spoken (test) | written (test_seen) | spoken (test_seen) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {f} | {_fmt(per_family.get(f))} | {_fmt(per_family_spoken.get(f))} | "
            f"{_fmt((per_family_seen or {}).get(f))} | {_fmt(spoken_seen.get(f))} |"
            for f in fams
        ]
    else:
        lines += ["| family | written | spoken |", "|---|---|---|"]
        lines += [f"| {f} | {_fmt(per_family.get(f))} | {_fmt(per_family_spoken.get(f))} |" for f in fams]
    return lines


def write_report(
    out_dir: Path,
    metrics: dict[str, Any],
    per_family: dict[str, float],
    latencies: list[float],
    samples: list[dict],
    per_family_spoken: dict[str, float] | None = None,
    per_family_seen: dict[str, float] | None = None,
    per_family_spoken_seen: dict[str, float] | None = None,
) -> Path:
    """Write report.md (and its plots) into ``out_dir``.

    ``per_family_seen``/``per_family_spoken_seen``: the test_seen split's (held-out voices,
    training phrasings); None when the dataset has no such split, and the per-family table
    then has only the test columns.
    """
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lws_core.schema.render import render_timeline

    plots: list[str] = []
    per_family_spoken = per_family_spoken or {}
    if per_family:
        fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
        fams = list(per_family)
        xs = np.arange(len(fams))
        ax.bar(xs - 0.2, [v if v == v else 0 for v in per_family.values()], 0.4, color="#6baed6", label="written answer")
        ax.bar(xs + 0.2, [per_family_spoken.get(f, 0.0) if per_family_spoken.get(f, 0.0) == per_family_spoken.get(f, 0.0) else 0 for f in fams], 0.4, color="#fd8d3c", label="spoken answer")
        ax.set_xticks(xs, fams)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
        ax.set_title("task accuracy per family (test split)")
        plt.xticks(rotation=30, ha="right")
        fig.tight_layout()
        fig.savefig(out_dir / "task_accuracy.png")
        plt.close(fig)
        plots.append("task_accuracy.png")
    if latencies:
        fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
        ax.hist(latencies, bins=20, color="#fd8d3c")
        ax.set_xlabel("end of user turn → first spoken word (s)")
        ax.set_ylabel("sessions")
        fig.tight_layout()
        fig.savefig(out_dir / "latency_hist.png")
        plt.close(fig)
        plots.append("latency_hist.png")
    for i, s in enumerate(samples):
        pred = s["pred"].model_copy(update={"user_words": s["labels"].user_words, "id": s["id"]})
        name = f"timeline_{i}_{s['scenario']}.png"
        render_timeline(pred, out_dir / name, title=f"{s['id']} ({s['scenario']}): model output over the user's speech")
        plots.append(name)

    lines = ["# LWS evaluation report", "", "Free-running streaming engine on the held-out test split."]
    if metrics.get("engine_settings"):
        settings = json.loads(metrics["engine_settings"])
        lines += ["", "Engine: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))]
    lines += ["", "| metric | value |", "|---|---|"]
    # per-family metrics (``task_accuracy.<family>`` ...) go to the table below, not here
    lines += [
        f"| {k} | {_fmt(v)} |"
        for k, v in metrics.items()
        if not k.startswith("fdb_") and k != "engine_settings" and "." not in k
    ]
    lines += _consistency_lines(metrics)
    lines += family_table(per_family, per_family_spoken, per_family_seen, per_family_spoken_seen)
    fdb = {k: v for k, v in metrics.items() if k.startswith("fdb_")}
    if fdb:
        lines += [
            "",
            "## Full-Duplex-Bench v1 on our probe",
            "",
            "Probe synthesized with our TTS in the benchmark's format (`fdb/` here: run `lws eval fdb-metrics fdb` or the",
            "official scripts on it). Words in output.json come from the TTS's word events, not from ASR. Not the",
            "official data: not comparable to the leaderboard. Only audio is scored; the written channel earns nothing here.",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in fdb.items()]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
