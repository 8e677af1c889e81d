"""Scripted decoding policies the engine itself uses (tests script their own).

:class:`BusiestUnit` makes a unit cost the most a unit can: it speaks, and writes and says
text up to both budgets. The server's warm-up times rounds of such units, so its first capacity
estimate holds for any model. A silent warm-up measured only listening units, and a talkative
model then took more sessions than it could keep within half a unit (benchmarks/results/serve.md,
stop 38).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lws_core.schema import Phase

if TYPE_CHECKING:
    from lws_core.engine.engine import Engine
    from lws_core.engine.session import DecodeContext

FILLER = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"


class BusiestUnit:
    """Every unit: ``speak``, then filler text to the write budget, then to the say budget, then ``end``.

    Each token is fed in its own forward (``feed_each_token``), as a sampled one is, so a unit costs
    what a model that speaks with full budgets costs; the text is real words, so the speech renderer
    (when the engine speaks) does the work a spoken answer costs. Tokens the grammar forces are left
    to the decoding loop, as in any unit."""

    feed_each_token = True

    def __init__(self, engine: Engine) -> None:
        self.ids = engine.model.tokenizer.special
        self.text = engine.model.tokenizer.encode_text(FILLER)
        self.max_write = engine.model.spec.max_write_tokens
        self.max_say = engine.model.spec.max_say_tokens
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
