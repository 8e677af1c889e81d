"""The promotion gate: a challenger becomes champion only if no gated metric is worse. Pure function."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return ("promote: " if self.promote else "keep as challenger: ") + "; ".join(self.reasons)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, rules: Sequence) -> GateDecision:  # noqa: ANN001
    """Compare gated metrics. Every rule must pass; a missing or non-finite challenger metric fails,
    except for a rule with ``required=False`` that neither model reports (not applicable)."""
    ok = True
    reasons: list[str] = []
    for r in rules:
        c = _num(challenger.get(r.metric))
        if c is None:
            champ_has = champion is not None and _num(champion.get(r.metric)) is not None
            if not getattr(r, "required", True) and not champ_has:
                reasons.append(f"{r.metric}: not reported (optional rule skipped)")
                continue
            ok = False
            reasons.append(f"{r.metric}: missing or not finite on the challenger")
            continue
        if champion is None:
            reasons.append(f"{r.metric}={c:.4g} (no champion yet)")
            continue
        ch = _num(champion.get(r.metric))
        if ch is None:
            reasons.append(f"{r.metric}={c:.4g} (champion has no value)")
            continue
        better_or_equal = c >= ch - r.tolerance if r.direction == "higher" else c <= ch + r.tolerance
        sign = ">=" if r.direction == "higher" else "<="
        if better_or_equal:
            reasons.append(f"{r.metric}: {c:.4g} {sign} {ch:.4g} (tol {r.tolerance:g}) ok")
        else:
            ok = False
            reasons.append(f"{r.metric}: {c:.4g} worse than champion {ch:.4g} (tol {r.tolerance:g})")
    return GateDecision(ok, reasons)
