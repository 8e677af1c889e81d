"""Token counting for the per-unit write/say budgets (invariant 6).

Choice: a fixed byte-level BPE (at most 1024 entries, digits one per token) trained once, deterministically, from
template-task text. Budgets are counted with it exactly, and the tokenizer is
saved beside the dataset (``tokenizer/``) so training can use the very same one
and the budgets hold token for token. A different tokenizer at training time
may count differently; the collator/engine then enforce their own budget
(force-closing units), which the schema allows.
"""

from __future__ import annotations

import functools

import numpy as np

from lws_core.schema import SchemaTokenizer, train_bpe_tokenizer

BPE_VOCAB = 1024  # an upper bound: the corpus saturates near 630 entries


def _corpus(n: int = 400) -> list[str]:
    """Template text, plus every question and spoken answer as it is *pronounced* ("forty two").

    The spoken forms are what the model hears (the backbone's text view of the
    audio, the speech encoder's CTC targets); with them in the corpus, nearly
    every heard word is one token, so a unit's words fit its K audio slots.
    """
    from lws_core.audio.align import spoken_form
    from lws_core.data.scenarios import BACKCHANNELS
    from lws_core.data.tasks import FAMILIES, make_followup, make_question

    rng = np.random.default_rng(12345)
    out = []
    for i in range(n):
        for split in ("train", "test"):
            q = make_question(FAMILIES[i % len(FAMILIES)], rng, split)
            s = q.script
            assert s is not None
            out += [q.text, s.written, s.spoken, *(nt.text for nt in s.notes)]
            f = make_followup(q, rng)
            out += [f.text, f.script.written if f.script else ""]
            out += [" " + spoken_form(t.split()) for t in (q.text, s.spoken, f.text)]
    out += [" " + spoken_form(b.split()) for b in BACKCHANNELS] * 20
    return out


@functools.lru_cache(maxsize=1)
def budget_tokenizer() -> SchemaTokenizer:
    """The fixed BPE used to count budget tokens (same corpus, same result, every process)."""
    return train_bpe_tokenizer(_corpus(), vocab_size=BPE_VOCAB)


def count_tokens(text: str) -> int:
    if not text:
        return 0
    return len(budget_tokenizer().hf.encode(text, add_special_tokens=False))


def fit_prefix(text: str, budget: int, head: str = "") -> int:
    """Length of the longest prefix p of ``text`` with count(head + p) <= ``budget``, cut after whitespace where possible."""
    if not text or count_tokens(head) >= budget:
        return 0
    if count_tokens(head + text) <= budget:
        return len(text)
    cuts = [i + 1 for i, c in enumerate(text) if c in " \n"]
    best = 0
    lo, hi = 0, len(cuts) - 1
    while lo <= hi:  # token counts grow with prefix length: binary search over the cut points
        mid = (lo + hi) // 2
        if count_tokens(head + text[: cuts[mid]]) <= budget:
            best, lo = cuts[mid], mid + 1
        else:
            hi = mid - 1
    if best:
        return best
    lo, hi = 1, len(text)
    while lo <= hi:
        mid = (lo + hi) // 2
        if count_tokens(head + text[:mid]) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best
