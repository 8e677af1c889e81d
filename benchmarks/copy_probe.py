"""Does the text backbone copy what it heard? Teacher-forced digit accuracy in its notes and answers.

For each session of a split, the backbone reads the session's text view (each unit's heard words in its
audio slots, as in pretraining) and predicts every labelled token from the true prefix. Each number it
writes is classed as **copy** (the same number was heard earlier in the session) or **other** (computed,
or from an earlier note), and its digit tokens as **first** or **later**; **number** counts the numbers whose
every token is right (comparable across tokenizers that split numbers differently). A backbone that copies gets the later
digits of a copied number nearly always right once the first is given; one that does not sits near the
digit prior. **opening-number** is the subset of numbers (copied or not) that open a write/say segment or a
line: the place where a bare first digit used to differ from every other number's.

    .venv/bin/python benchmarks/copy_probe.py --backbone DIR --data DATASET --split test_seen --sessions 150

One backbone, one split, one run: quote it as such (not an interval).
"""

from __future__ import annotations

import argparse
import collections
import re

KINDS = ("copy-first", "copy-later", "other-first", "other-later", "copy-number", "other-number", "opening-number")


def probe(backbone: str, data: str, split: str, sessions: int) -> dict[str, tuple[int, float]]:
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM

    from lws_core.config import LWSConfig
    from lws_core.data.budget import budget_tokenizer
    from lws_core.schema import SchemaTokenizer
    from lws_core.schema.tokenizer import SCHEMA_FILE
    from lws_core.train.pretrain_backbone import load_sessions, text_view

    lm = AutoModelForCausalLM.from_pretrained(backbone).eval()
    # the backbone's own tokenizer where it saved one, so backbones of older tokenizer rules probe as trained
    tok = SchemaTokenizer.load(backbone) if (Path(backbone) / SCHEMA_FILE).is_file() else budget_tokenizer()
    k = LWSConfig().schema_.audio_tokens_per_unit
    hf = tok.hf
    stats: collections.Counter[tuple[str, bool]] = collections.Counter()
    for s in load_sessions(data, split)[:sessions]:
        ids, labels = text_view(s, tok, k, 4096)
        with torch.no_grad():
            pred = lm(torch.tensor([ids])).logits[0].argmax(-1).tolist()
        toks = [hf.decode([i]) for i in ids]
        digit = [bool(re.fullmatch(r"\d+", t.strip())) for t in toks]  # a digit, a space+digit or a digit group
        t = 1
        while t < len(ids):
            if labels[t] < 0 or not digit[t]:
                t += 1
                continue
            e = t
            while e < len(ids) and digit[e] and labels[e] >= 0:
                e += 1
            num = "".join(toks[t:e]).strip()
            heard = "".join(x if labels[j] < 0 else " " for j, x in enumerate(toks[:t]))
            src = "copy" if re.search(rf"(?<!\d){num}(?!\d)", heard) else "other"
            for j in range(t, e):
                stats[(f"{src}-{'first' if j == t else 'later'}", pred[j - 1] == ids[j])] += 1
            whole = all(pred[j - 1] == ids[j] for j in range(t, e))
            stats[(f"{src}-number", whole)] += 1
            before = next((j for j in range(t - 1, -1, -1) if toks[j].strip()), 0)  # the last non-space token
            if ids[before] in tok.special_set or "\n" in toks[before]:
                stats[("opening-number", whole)] += 1
            t = e
    out = {}
    for kind in KINDS:
        n = stats[(kind, True)] + stats[(kind, False)]
        out[kind] = (n, stats[(kind, True)] / n if n else float("nan"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test_seen")
    ap.add_argument("--sessions", type=int, default=150)
    a = ap.parse_args()
    r = probe(a.backbone, a.data, a.split, a.sessions)
    print(f"| digits ({a.split}, {a.sessions} sessions) | n | argmax-correct |\n|---|---|---|")
    for kind, (n, acc) in r.items():
        print(f"| {kind} | {n} | {acc:.3f} |")


if __name__ == "__main__":
    main()
