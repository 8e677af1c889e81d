"""report.md + PNG plots for an evaluation run (the ops layer logs the directory to MLflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def write_report(out_dir: Path, metrics: dict[str, Any], per_family: dict[str, float], latencies: list[float], samples: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lws_core.schema.render import render_timeline

    plots: list[str] = []
    if per_family:
        fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
        ax.bar(list(per_family), [v if v == v else 0 for v in per_family.values()], color="#6baed6")
        ax.set_ylim(0, 1)
        ax.set_ylabel("written-answer accuracy")
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

    lines = ["# LWS evaluation report", "", "Free-running streaming engine on the held-out test split.", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    if per_family:
        lines += ["", "## Task accuracy per family", "", "| family | accuracy |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in per_family.items()]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
