"""Per-session scores of one evaluation: what the promotion gate pairs, session by session.

Why: an aggregate such as ``state_accuracy = 0.89`` cannot say whether a second model's 0.87 is
worse or noise. Kept per session (``session_scores.json`` beside ``metrics.json``), two models
evaluated on the same sessions can be compared by a paired test. Each metric is a ratio of sums
over sessions, so every entry is ``[numerator, denominator]``: state accuracy is (correct units,
units), a graded answer is (1 or 0, 1), a session a metric does not apply to is absent. The
aggregate in ``metrics.json`` is exactly ``sum(num) / sum(den)``.

``eval_set`` names what was evaluated (the sessions' ids, labels and audio, plus the eval and engine
settings): two score files are comparable only when their ``eval_set`` is equal. Pure data, no
MLflow or DVC here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILENAME = "session_scores.json"


@dataclass
class SessionScores:
    eval_set: str
    # metric -> {session id: [numerator, denominator]}
    metrics: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, metric: str, session: str, num: float, den: float = 1.0) -> None:
        self.metrics.setdefault(metric, {})[session] = [float(num), float(den)]

    def value(self, metric: str) -> float | None:
        """The aggregate over sessions (None when no session has the metric)."""
        rows = self.metrics.get(metric) or {}
        den = sum(d for _, d in rows.values())
        return sum(n for n, _ in rows.values()) / den if den > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"eval_set": self.eval_set, "metrics": self.metrics}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SessionScores:
        metrics = {m: {str(s): [float(v[0]), float(v[1])] for s, v in rows.items()} for m, rows in d.get("metrics", {}).items()}
        return cls(str(d["eval_set"]), metrics)

    def write(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / FILENAME
        path.write_text(json.dumps(self.to_dict(), sort_keys=True))
        return path

    @classmethod
    def read(cls, path: str | Path) -> SessionScores:
        """From a ``session_scores.json`` or the evaluation directory that holds one."""
        p = Path(path)
        if p.is_dir():
            p = p / FILENAME
        return cls.from_dict(json.loads(p.read_text()))


def eval_set_digest(rows: Iterable[dict[str, Any]], settings: dict[str, Any]) -> str:
    """A content hash of the evaluated sessions (id, labels, audio) and the settings that scored them."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for row in rows:
        h.update(str(row.get("id", "")).encode())
        h.update(str(row.get("session", "")).encode())
        h.update(hashlib.sha256(row.get("audio") or b"").digest())
    return "sha256:" + h.hexdigest()[:32]


def add_fdb_samples(scores: SessionScores, tree_metrics: dict[str, Any]) -> None:
    """Per-sample Full-Duplex-Bench rows (the probe tree's ``metrics.json``) as ``fdb_<task>_tor`` and
    ``fdb_<task>_latency_s`` entries, named as ``evaluate_tree`` names the aggregates."""
    from lws_core.eval.fdb_metrics import metric_key

    seen: set[str] = set()
    for name, task in (tree_metrics.get("tasks") or {}).items():
        if task.get("task") not in ("pause_handling", "smooth_turn_taking", "user_interruption", "backchannel"):
            continue
        key = metric_key(task["task"])
        if key in seen:
            key = f"{key}_{name}"
        seen.add(key)
        for row in task.get("per_sample", []):
            sid = f"{name}/{row['id']}"
            if row.get("to") is not None:
                scores.add(f"{key}_tor", sid, float(row["to"]))
            if row.get("latency_s") is not None:
                scores.add(f"{key}_latency_s", sid, float(row["latency_s"]))
