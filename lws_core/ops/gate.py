"""The promotion gate: paired per-session scores of challenger and champion on one evaluation set.

Why this shape: a test set of ~100 sessions moves aggregates by several points between runs of one
config, so a point comparison with a small tolerance promotes noise and refuses noise alike. The
gate pairs the two models' scores session by session (same sessions, same audio: ``eval_set``),
takes a paired percentile bootstrap of (challenger - champion) for every gated metric
(``scipy.stats.bootstrap``, fixed seed, so a decision is reproducible) and rules:

- **worse**: the interval's better-oriented lower end is below ``-tolerance``: the data cannot show
  that the challenger is not worse by more than the tolerance, at the configured confidence;
- **below floor**: the challenger's own value is past the rule's absolute ``floor``;
- **better**: the lower end is above 0 at a Bonferroni-adjusted confidence (one claim per compared
  metric), so that among several metrics one does not turn out "better" by chance;
- **tie**: neither.

A challenger is promoted only when no rule fails and at least one metric is better: a tie within
noise keeps the champion. With no champion, only the floors and the presence of required metrics
count. Pure functions, no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lws_core.eval.sessions import SessionScores

OK_VERDICTS = ("better", "tie", "no champion", "skipped")


@dataclass
class MetricResult:
    """One gated metric's row in the gate's table (the model version's description)."""

    metric: str
    direction: str
    challenger: float | None
    champion: float | None
    low: float | None  # interval of (challenger - champion), raw (not oriented), at the gate's confidence
    high: float | None
    floor: float | None
    tolerance: float
    verdict: str  # better | tie | worse | below floor | missing | no champion | skipped
    sessions: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict in OK_VERDICTS

    def reason(self) -> str:
        c = _fmt(self.challenger)
        if self.verdict == "missing":
            return f"{self.metric}: missing on the challenger (or not paired with the champion's sessions)"
        if self.verdict == "skipped":
            return f"{self.metric}: not reported by either model (optional rule skipped)"
        if self.verdict == "below floor":
            side = "below" if self.direction == "higher" else "above"
            return f"{self.metric}: {c} is {side} the floor {self.floor:g}"
        if self.verdict == "no champion":
            return f"{self.metric}={c} (no champion yet)"
        interval = f"[{self.low:+.4f}, {self.high:+.4f}]" if self.low is not None else "n/a"
        what = {"worse": f"may be worse than the champion by more than {self.tolerance:g}", "better": "better than the champion",
                "tie": "a tie with the champion within noise"}[self.verdict]
        return f"{self.metric}: {c} vs champion {_fmt(self.champion)}, difference {interval} over {self.sessions} sessions: {what}"


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    rows: list[MetricResult] = field(default_factory=list)
    compared_with: str | None = None  # the champion's version
    confidence: float = 0.95
    eval_set: str = ""

    def summary(self) -> str:
        return ("promote: " if self.promote else "keep the champion: ") + "; ".join(self.reasons)

    def table(self) -> str:
        """Markdown: the verdict, then metric | champion | challenger | interval | floor | verdict."""
        head = "**Promoted to champion.**" if self.promote else "**Not promoted: the champion stays.**"
        against = f"champion version {self.compared_with}" if self.compared_with else "no champion (first version)"
        lines = [
            head,
            "",
            f"Compared with {against} on evaluation set `{self.eval_set}`; intervals: paired bootstrap of "
            f"challenger - champion over sessions, {100 * self.confidence:g} % confidence.",
            "",
            "| metric | better | champion | challenger | interval | tolerance | floor | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            interval = f"[{r.low:+.4f}, {r.high:+.4f}]" if r.low is not None else "–"
            floor = "–" if r.floor is None else f"{r.floor:g}"
            lines.append(f"| {r.metric} | {r.direction} | {_fmt(r.champion)} | {_fmt(r.challenger)} | {interval} | "
                         f"{r.tolerance:g} | {floor} | {r.verdict} |")
        lines += ["", *[f"- {x}" for x in self.reasons]]
        return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def paired_bootstrap(
    challenger: dict[str, list[float]],
    champion: dict[str, list[float]],
    confidence: float,
    resamples: int,
    seed: int = 0,
) -> tuple[float, float, np.ndarray, int]:
    """Percentile interval of ratio(challenger) - ratio(champion), resampling sessions in pairs.

    ``challenger``/``champion``: {session id: [numerator, denominator]}; a session one model has and
    the other not counts as (0, 0) on the missing side. Returns (low, high, bootstrap distribution, n).
    """
    from scipy.stats import bootstrap

    ids = sorted(set(challenger) | set(champion))
    c = np.array([challenger.get(i, [0.0, 0.0]) for i in ids], dtype=float)
    h = np.array([champion.get(i, [0.0, 0.0]) for i in ids], dtype=float)

    def diff(cn: np.ndarray, cd: np.ndarray, hn: np.ndarray, hd: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return cn.sum(axis) / cd.sum(axis) - hn.sum(axis) / hd.sum(axis)

    point = float(diff(c[:, 0], c[:, 1], h[:, 0], h[:, 1]))
    if len(ids) < 2 or np.allclose(c, h):  # identical scores: nothing to resample
        return point, point, np.full(1, point), len(ids)
    res = bootstrap(
        (c[:, 0], c[:, 1], h[:, 0], h[:, 1]), diff, paired=True, vectorized=True, n_resamples=resamples,
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )
    dist = res.bootstrap_distribution
    dist = dist[np.isfinite(dist)]
    lo, hi = res.confidence_interval
    if not (math.isfinite(lo) and math.isfinite(hi)):  # resamples without a graded session: use the finite ones
        alpha = (1 - confidence) / 2
        lo, hi = np.quantile(dist, [alpha, 1 - alpha])
    return float(lo), float(hi), dist, len(ids)


def _past_floor(value: float, rule) -> bool:  # noqa: ANN001
    return rule.floor is not None and (value < rule.floor if rule.direction == "higher" else value > rule.floor)


def decide(
    challenger: SessionScores,
    champion: SessionScores | None,
    rules: Sequence,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    champion_version: str | None = None,
) -> GateDecision:
    """Gate ``challenger`` against ``champion`` (both scored on one ``eval_set``; None: no champion)."""
    if champion is not None and champion.eval_set != challenger.eval_set:
        raise ValueError(f"scores on different evaluation sets: {challenger.eval_set} vs {champion.eval_set}")
    rows: list[MetricResult] = []
    compared = []
    for r in rules:
        c = challenger.value(r.metric)
        ch = champion.value(r.metric) if champion is not None else None
        row = MetricResult(r.metric, r.direction, c, ch, None, None, r.floor, r.tolerance, "tie")
        rows.append(row)
        if c is None or not math.isfinite(c):
            row.verdict = "skipped" if not getattr(r, "required", True) and ch is None else "missing"
            continue
        if _past_floor(c, r):
            row.verdict = "below floor"
            continue
        if champion is None or ch is None:
            row.verdict = "no champion" if champion is None else "tie"  # a metric the champion lacks decides nothing
            continue
        lo, hi, dist, n = paired_bootstrap(challenger.metrics[r.metric], champion.metrics[r.metric], confidence, resamples, seed)
        row.low, row.high, row.sessions = lo, hi, n
        worst = lo if r.direction == "higher" else -hi  # the better-oriented lower end
        row.verdict = "worse" if worst < -r.tolerance - 1e-12 else "tie"
        compared.append((row, dist))
    # "better" needs the improvement at a Bonferroni-adjusted confidence over the compared metrics
    alpha = (1 - confidence) / max(len(compared), 1)
    for row, dist in compared:
        if row.verdict != "tie":
            continue
        oriented = dist if row.direction == "higher" else -dist
        if float(np.quantile(oriented, alpha / 2)) > 0:
            row.verdict = "better"
    failed = [x for x in rows if not x.ok]
    if champion is None:
        promote = not failed
    else:
        promote = not failed and any(x.verdict == "better" for x in rows)
    reasons = [x.reason() for x in rows]
    if champion is not None and not failed and not promote:
        reasons.append("no gated metric is better than the champion's beyond noise: the champion stays")
    return GateDecision(promote, reasons, rows, champion_version, confidence, challenger.eval_set)
