"""Scripted decoding policies the engine itself uses (tests script their own).

:class:`BusiestUnit` makes a unit cost the most a unit can: it speaks, and writes and says
text up to both budgets. The server's warm-up times rounds of such units, so its first capacity
estimate holds for any model. A silent warm-up measured only listening units, and a talkative
model then took more sessions than it could keep within half a unit (benchmarks/results/serve.md,
stop 38). :func:`busiest_spoken_unit` measures how much of those budgets the model itself uses
when it answers a spoken question, so the warm-up can time the busiest unit *this* model makes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lws_core.schema import Phase

if TYPE_CHECKING:
    from lws_core.engine.engine import Engine
    from lws_core.engine.session import DecodeContext, Policy

FILLER = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"


class BusiestUnit:
    """Every unit: ``speak``, then filler text to the write budget, then to the say budget, then ``end``.

    Each token is fed in its own forward (``feed_each_token``), as a sampled one is, so a unit costs
    what a model that speaks with full budgets costs; the text is real words, so the speech renderer
    (when the engine speaks) does the work a spoken answer costs. Tokens the grammar forces are left
    to the decoding loop, as in any unit."""

    feed_each_token = True

    def __init__(self, engine: Engine, write_tokens: int | None = None, say_tokens: int | None = None) -> None:
        """``write_tokens`` / ``say_tokens``: text tokens to write and say (default, and at most: the budgets)."""
        self.ids = engine.model.tokenizer.special
        self.text = engine.model.tokenizer.encode_text(FILLER)
        spec = engine.model.spec
        self.max_write = spec.max_write_tokens if write_tokens is None else max(0, min(write_tokens, spec.max_write_tokens))
        self.max_say = spec.max_say_tokens if say_tokens is None else max(0, min(say_tokens, spec.max_say_tokens))
        if not self.text:
            raise ValueError("BusiestUnit: the tokenizer encodes the filler text as nothing")

    def __call__(self, ctx: DecodeContext) -> int | None:
        if len(ctx.allowed) == 1 and not ctx.text_allowed:
            return None
        if ctx.phase == Phase.STATE:
            return self.ids.speak
        if ctx.phase == Phase.WRITE:
            return self.text[ctx.n_write % len(self.text)] if ctx.text_allowed and ctx.n_write < self.max_write else self.ids.say
        if ctx.phase == Phase.SAY:
            return self.text[ctx.n_say % len(self.text)] if ctx.text_allowed and ctx.n_say < self.max_say else self.ids.end
        return None  # e.g. <|write|> after the state: the grammar's only choice


# a question in the template tasks' domain, spoken at start-up to see how much this model writes and says
SPOKEN_QUESTION = "What is twelve plus thirty? Please write the answer down."
ANSWER_UNITS = 8  # silent units after the question in which the model may answer


def busiest_spoken_unit(engine: Engine, policy: Policy | None = None) -> tuple[int, int] | None:
    """``(write, say)`` text tokens of the busiest units the model makes while it hears and answers one spoken
    question (each the most over its units: notes are written while listening too), or None when it said nothing
    (its cost is then unknown) or no speech could be made.

    Why: :class:`BusiestUnit` with both budgets full costs several times what a trained model's speaking units
    cost (a champion's live rounds cost 0.16-0.40 of the warm-up's busiest units: benchmarks/results/serve.md,
    stop 49), and clients that arrive together are admitted on the warm-up's estimate alone. Timing the busiest
    unit the model itself made keeps the warm-up's assumption that every session speaks at once, at this model's
    own length. A random-init model decodes the full budgets, so it changes nothing there. ``policy``: the
    session's decoding policy (tests script one; default the engine's own sampling)."""
    from lws_core.audio import get_tts
    from lws_core.errors import InputError

    try:
        audio = np.asarray(get_tts().synthesize(SPOKEN_QUESTION).audio, dtype=np.float32)
    except (InputError, OSError):  # espeak-ng missing or failing here: keep the full budgets
        return None
    n = engine.unit_samples
    units = -(-len(audio) // n) + ANSWER_UNITS
    padded = np.zeros(units * n, dtype=np.float32)
    padded[: len(audio)] = audio
    write = say = 0
    with engine.session(policy=policy) as sess:
        for i, block in enumerate(engine.iter_units(padded)):
            out = sess.step(block)
            if say and i * n >= len(audio) and out.state != "speak":  # the answer has ended: no need to wait more
                break
            write, say = max(write, int(out.timings["write_tokens"])), max(say, int(out.timings["say_tokens"]))
    return (write, say) if say else None
