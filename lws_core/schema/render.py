"""Draw a session as lanes over time: user speech, floor state, written text, spoken text.

People read a turn faster from a picture than from a token dump; the README,
`lws schema render`, `lws data show` and `lws simulate` all use this.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from lws_core.schema.timeline import Session

_LANES = ("user", "state", "write", "say")
_COLORS = {"listen": "#9ecae1", "speak": "#fdae6b"}


def render_timeline(session: Session, path: str | Path, title: str | None = None, max_units: int = 40) -> Path:
    """Write a PNG of (at most ``max_units`` of) the session and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    units = session.units[:max_units]
    dur = max(len(units) * session.unit_s, 1e-3)
    width = min(2.0 + 1.3 * len(units), 40.0)
    fig, ax = plt.subplots(figsize=(width, 4.2), dpi=110)
    y = {name: len(_LANES) - 1 - i for i, name in enumerate(_LANES)}

    for w in session.user_words:
        if w.start >= dur:
            break
        ax.add_patch(Rectangle((w.start, y["user"] + 0.15), max(w.end - w.start, 0.02), 0.7, color="#c7e9c0", lw=0))
        ax.text((w.start + w.end) / 2, y["user"] + 0.5, w.text, ha="center", va="center", fontsize=7, rotation=30)

    for i, u in enumerate(units):
        x0 = i * session.unit_s
        ax.add_patch(Rectangle((x0, y["state"] + 0.15), session.unit_s, 0.7, color=_COLORS[u.state], ec="white", lw=1))
        ax.text(x0 + session.unit_s / 2, y["state"] + 0.5, u.state + (" ⏎" if u.eot else ""), ha="center", va="center", fontsize=7)
        for lane in ("write", "say"):
            text = getattr(u, lane).strip()
            if text:
                ax.add_patch(Rectangle((x0, y[lane] + 0.1), session.unit_s, 0.8, color="#f0f0f0", ec="#bbbbbb", lw=0.5))
                wrapped = "\n".join(textwrap.wrap(text, width=max(8, int(14 * session.unit_s)))[:4])
                ax.text(x0 + 0.03, y[lane] + 0.85, wrapped, ha="left", va="top", fontsize=6, family="monospace")
        ax.axvline(x0, color="#dddddd", lw=0.5, zorder=0)

    ax.set_xlim(0, dur)
    ax.set_ylim(0, len(_LANES))
    ax.set_yticks([y[n] + 0.5 for n in _LANES])
    ax.set_yticklabels(["user speech", "state", "written", "spoken"])
    ax.set_xlabel("time (s)")
    ax.set_title(title or f"session {session.id} ({session.unit_s:g}s units)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
