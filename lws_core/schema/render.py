"""Draw a session as lanes over time: user speech, floor state, written text, spoken text.

People read a turn faster from a picture than from a token dump. ``render_timeline``
draws dataset sessions (README, `lws schema render`, `lws data show`, eval reports);
``render_simulation`` draws a whole `lws simulate` run, with the user's speech
activity and the speech where it was played.
"""

from __future__ import annotations

import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from lws_core.schema.timeline import Session, Word

_LANES = ("user", "state", "write", "say")
_COLORS = {"listen": "#9ecae1", "speak": "#fdae6b"}
_USER = "#74c476"  # user speech activity (simulation timelines)
_SAY = "#fdd0a2"  # words as played (simulation timelines)


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

    _frame_lanes(ax, dur, y, title or f"session {session.id} ({session.unit_s:g}s units)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


@dataclass
class Span:
    """One drawn box on a lane, in seconds (``label`` is the full text, drawn or not)."""

    start: float
    end: float
    label: str = ""


@dataclass
class TimelineDrawing:
    """What :func:`render_simulation` drew, so tests (and callers) can check the picture's content.

    ``lanes`` holds every span drawn per lane (``user``, ``state``, ``write``, ``say``);
    ``labels_drawn`` counts the text labels that had room. ``pixel`` maps a time on a
    lane to the (column, row) of the PNG where it was drawn.
    """

    path: Path
    duration_s: float
    lanes: dict[str, list[Span]]
    labels_drawn: dict[str, int]
    width_px: int
    height_px: int
    _x0: float = 0.0
    _px_per_s: float = 1.0
    _rows: dict[str, float] = field(default_factory=dict)

    def pixel(self, t: float, lane: str) -> tuple[int, int]:
        return int(round(self._x0 + t * self._px_per_s)), int(round(self._rows[lane]))


def _printable(text: str) -> str:
    """Model text may hold control characters (byte-level tokens of an undertrained model): no font has them."""
    return "".join(c if c.isprintable() else "·" for c in text)


def _fits(text: str, px: float, fontsize: float, dpi: float) -> int:
    """How many characters of a monospace label fit in ``px`` pixels."""
    return int(px / (0.6 * fontsize * dpi / 72.0))


def render_simulation(
    session: Session,
    path: str | Path,
    user_speech: list[tuple[float, float]],
    spoken: list[Word],
    duration_s: float | None = None,
    title: str | None = None,
    max_width_in: float = 40.0,
) -> TimelineDrawing:
    """Draw a whole simulated session: user speech activity, state, writing, and speech at playback time.

    Unlike :func:`render_timeline` (dataset sessions, whose words and units share one
    clock), a simulation's speech is heard later than it is decided (from the next
    unit on, and spilling over), so the spoken lane is drawn from the played words'
    output-stream times; the user lane shows when the user spoke (the recording has
    no transcript). Every unit is drawn; on long sessions the figure's width is capped
    and labels are drawn only where they have room, rather than dropping units.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit_s = session.unit_s
    dur = max(duration_s if duration_s is not None else len(session.units) * unit_s, 1e-3)
    dpi = 110
    width = min(max(6.0, 2.0 + 1.3 * dur), max_width_in)
    fig, ax = plt.subplots(figsize=(width, 4.2), dpi=dpi)
    y = {name: len(_LANES) - 1 - i for i, name in enumerate(_LANES)}
    lanes: dict[str, list[Span]] = {name: [] for name in _LANES}
    drawn = dict.fromkeys(_LANES, 0)

    _frame_lanes(ax, dur, y, title or f"session {session.id} ({unit_s:g}s units)")
    fig.tight_layout()
    (x0, _), (x1, _) = ax.transData.transform([(0.0, 0.0), (dur, 0.0)])
    px_per_s = (x1 - x0) / dur

    # user speech: activity segments
    lanes["user"] = [Span(a, min(b, dur)) for a, b in user_speech if a < dur]
    ax.broken_barh([(s.start, s.end - s.start) for s in lanes["user"]], (y["user"] + 0.15, 0.7), color=_USER)

    # state: runs of equal state (one box per run keeps 30-minute sessions cheap to draw)
    runs: list[Span] = []
    for i, u in enumerate(session.units):
        a, b = i * unit_s, min((i + 1) * unit_s, dur)
        if runs and runs[-1].label == u.state and abs(runs[-1].end - a) < 1e-9:
            runs[-1].end = b
        else:
            runs.append(Span(a, b, u.state))
    lanes["state"] = runs
    for state, color in _COLORS.items():
        ax.broken_barh(
            [(s.start, s.end - s.start) for s in runs if s.label == state], (y["state"] + 0.15, 0.7), color=color
        )
    if unit_s * px_per_s >= 30:  # unit boundaries and end-of-turn marks only where a unit is wide enough to see
        for i, u in enumerate(session.units):
            ax.axvline(i * unit_s, color="#dddddd", lw=0.5, zorder=0)
            if u.eot:
                ax.text((i + 0.5) * unit_s, y["state"] + 0.5, "⏎", ha="center", va="center", fontsize=7)

    # written: the unit in which the text was decided
    lanes["write"] = [
        Span(i * unit_s, min((i + 1) * unit_s, dur), u.write.strip()) for i, u in enumerate(session.units) if u.write.strip()
    ]
    # spoken: the words as they were played (output-stream time)
    lanes["say"] = [Span(w.start, min(w.end, dur), w.text) for w in spoken if w.start < dur]
    for lane, face in (("write", "#f0f0f0"), ("say", _SAY)):
        spans = lanes[lane]
        ax.broken_barh(
            [(s.start, max(s.end - s.start, 0.02)) for s in spans], (y[lane] + 0.1, 0.8), color=face, ec="#bbbbbb", lw=0.5
        )
        free_px = -1.0  # thinning: a label is drawn only where the previous label has ended
        char_px = 0.6 * 6 * dpi / 72.0
        for j, s in enumerate(spans):
            left = x0 + s.start * px_per_s
            if left < free_px:
                continue  # its box is drawn; its label would overlap the previous one
            nxt = spans[j + 1].start if j + 1 < len(spans) else dur
            room = (max(nxt, s.end) - s.start) * px_per_s - 2
            per_line = _fits(s.label, room, 6, dpi)
            if lane == "write" and per_line >= 8:  # wide units: the text wrapped inside its unit
                text = "\n".join(textwrap.wrap(_printable(s.label), width=per_line)[:4])
                ax.text(s.start + 0.02 * unit_s, y[lane] + 0.85, text, ha="left", va="top", fontsize=6, family="monospace")
                free_px = left + room
            else:  # narrow: one line over the following boxes, which then go unlabelled
                text = _printable(s.label if len(s.label) <= 12 else s.label[:11] + "…")
                ax.text(s.start, y[lane] + 0.5, text, ha="left", va="center", fontsize=6, family="monospace", clip_on=True)
                free_px = left + len(text) * char_px + 3
            drawn[lane] += 1

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w_px, h_px = (int(v * dpi) for v in fig.get_size_inches())  # as Agg sizes the canvas
    rows = {n: h_px - float(ax.transData.transform((0.0, y[n] + 0.5))[1]) for n in _LANES}
    with warnings.catch_warnings():  # model text in scripts the font lacks: drawn as boxes, not worth a warning
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return TimelineDrawing(path, dur, lanes, drawn, w_px, h_px, float(x0), float(px_per_s), rows)


def _frame_lanes(ax, dur: float, y: dict[str, int], title: str) -> None:  # noqa: ANN001
    """Axes, lane labels and title shared by both timeline pictures, so the two always read alike."""
    ax.set_xlim(0, dur)
    ax.set_ylim(0, len(_LANES))
    ax.set_yticks([y[n] + 0.5 for n in _LANES])
    ax.set_yticklabels(["user speech", "state", "written", "spoken"])
    ax.set_xlabel("time (s)")
    ax.set_title(title)
