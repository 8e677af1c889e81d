"""WER of a recogniser when its CTC blank is penalised at decoding, on several splits.

Why: the default recogniser's held-out-voice errors are mostly deletions (0.068 of its 0.115, stop 62), and taking a
constant off the blank's log-probability before the greedy path is the usual decode-time remedy for deletions. A
penalty chosen on ``validation`` (training voices) would be a fair one; this prints the WER for each penalty on every
split asked for, so both can be read side by side:

    .venv/bin/python benchmarks/blank_penalty.py --encoder E --data D --splits validation test_seen test

The greedy decoding and the sessions are the encoder stage's own (``lws_core.train.pretrain_encoder``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--splits", nargs="+", default=["validation", "test_seen"])
    ap.add_argument("--sessions", type=int, default=400)
    ap.add_argument("--penalties", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    a = ap.parse_args()

    import torch

    from lws_core.model.asr import BLANK, greedy_decode, load_recognizer, unit_log_probs
    from lws_core.train.pretrain_encoder import _load_split, dataset_tokenizer, word_error_rate

    rec = load_recognizer(a.encoder)
    rec.eval()
    tok = dataset_tokenizer(Path(a.data))
    for split in a.splits:
        ev = _load_split(Path(a.data), split, rec.speech.unit_samples, limit=a.sessions, tok=tok)
        refs = [" ".join(t for t in s.targets if t) for s in ev]
        with torch.no_grad():
            lps = [unit_log_probs(rec, s.units) if len(s.units) else None for s in ev]
        cells = []
        for pen in a.penalties:
            hyps = []
            for lp in lps:
                if lp is None:
                    hyps.append("")
                    continue
                lp = lp.clone()
                lp[..., BLANK] -= pen
                hyps.append(" ".join(h for h in greedy_decode(lp, rec.vocab) if h))
            cells.append(f"{pen:g}: {word_error_rate(refs, hyps):.4f}")
        print(f"{split} ({len(ev)} sessions): " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
