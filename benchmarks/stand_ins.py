"""Score the pretrained stand-ins on their own: the backbone's text ceiling, the encoder's WER.

For comparing pretraining settings without running the whole pipeline (the
pipeline's evaluate step reports the same figures for its champion). Train the
checkpoints with the CLI and its ``--set`` overrides, then score them here:

    .venv/bin/lws data synth --out /tmp/ds
    .venv/bin/lws pretrain backbone --out /tmp/bb --set pretrain.backbone.max_steps=900
    .venv/bin/lws pretrain encoder --data /tmp/ds --out /tmp/enc --set pretrain.encoder.aligned_weight=0
    .venv/bin/python benchmarks/stand_ins.py ceiling --backbone /tmp/bb --data /tmp/ds --show 8
    .venv/bin/python benchmarks/stand_ins.py ceiling --backbone /tmp/bb --data /tmp/ds --encoder /tmp/enc
    .venv/bin/python benchmarks/stand_ins.py wer --encoder /tmp/enc --data /tmp/ds --splits train test_seen [--base /tmp/enc0]
    .venv/bin/python benchmarks/stand_ins.py seeds --data /tmp/ds --seeds 1 2 3 --work /tmp/bbs
    .venv/bin/python benchmarks/stand_ins.py encoder-seeds --data /tmp/ds --seeds 0 1 2 --work /tmp/encs --set pretrain.encoder.dropout=0.2

``seeds``: pretrains one backbone per seed (``pretrain.backbone.seed``: its corpus and its init; the
current params.yaml otherwise, plus ``--set``) and reports the ceiling per family as a mean with a
95 % t-interval over the seeds (a backbone already in ``--work`` is reused).

``ceiling``: the backbone hears each graded session's question as text (its text
view of each unit) on the free-running streaming engine; written task accuracy
per family on ``test_seen`` and ``test`` (the same code as the evaluate step's
``text_ceiling``); with ``--encoder``, also the cascade (that recogniser's transcript in the
text view's slots, the evaluate step's ``cascade``). ``wer``: greedy per-unit transcripts joined per session, WER
against the heard transcript (jiwer), on the first ``--sessions`` sessions of
each split; ``train`` shows how well the recogniser fits its own voices.
One run is one seed: quote these as single runs, not intervals.
"""

from __future__ import annotations

import argparse
import time


def text_engine(backbone: str):  # noqa: ANN201 - an Engine
    """The engine on ``backbone`` alone, built as the evaluate step builds it for the ceiling."""
    from lws_core.config import LWSConfig
    from lws_core.eval.liberation import text_engine as build

    return build(LWSConfig(), backbone)


def ceiling(backbone: str, data: str, limit: int, show: int, encoder: str | None = None) -> None:
    import numpy as np
    from datasets import load_from_disk

    from lws_core.data.dataset import row_session
    from lws_core.eval.liberation import graded_rows, heard_by, heard_truth, run_mode
    from lws_core.model.asr import load_recognizer

    engine = text_engine(backbone)
    splits = load_from_disk(data)
    modes = {"text_ceiling": heard_truth(engine)}
    if encoder:
        modes["cascade"] = heard_by(load_recognizer(encoder), engine)
    for split in ("test_seen", "test"):
        for mode, heard_fn in modes.items():
            t = time.time()
            r = run_mode(engine, splits[split], mode, split, heard_fn, limit)
            fams = " ".join(f"{k} {v:.2f}" for k, v in sorted(r.written.items()))
            print(f"{split} {mode}: written {r.written_overall:.3f} over {r.graded} answers ({fams}); "
                  f"spoken {r.spoken_overall or 0:.3f}; {time.time() - t:.0f} s", flush=True)
    heard = heard_truth(engine)
    for row in list(graded_rows(splits["test_seen"], show)):
        labels = row_session(row)
        res = engine.simulate(np.zeros(len(labels.units) * engine.unit_samples, dtype=np.float32), heard=heard(row, labels))
        print(f"[{row['task_family']}] {row['question']!r} -> want {row['answer']!r}\n    wrote {res.written[-200:]!r}")


def ceiling_of(backbone: str, data: str, limit: int) -> dict[str, dict[str, float]]:
    """{split: {family | "overall": written accuracy}} of one backbone (the evaluate step's text ceiling)."""
    from datasets import load_from_disk

    from lws_core.eval.liberation import heard_truth, run_mode

    engine = text_engine(backbone)
    splits = load_from_disk(data)
    out = {}
    for split in ("test_seen", "test"):
        r = run_mode(engine, splits[split], "text_ceiling", split, heard_truth(engine), limit)
        out[split] = {**r.written, "overall": r.written_overall or 0.0}
    return out


def seeds(data: str, seed_list: list[int], work: str, limit: int, overrides: list[str]) -> None:
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np
    from liberation import t95  # the liberation benchmark's interval, beside this script

    runs = []
    for seed in seed_list:
        out = Path(work) / f"backbone-seed{seed}"
        if not (out / "pretrain_report.json").is_file():
            sets = [x for o in [*overrides, f"pretrain.backbone.seed={seed}"] for x in ("--set", o)]
            subprocess.run([str(Path(sys.executable).with_name("lws")), "pretrain", "backbone", "--out", str(out), "--quiet", *sets], check=True)
        runs.append(ceiling_of(str(out), data, limit))
        print(f"seed {seed}: " + " ".join(f"{s} {runs[-1][s]['overall']:.3f}" for s in runs[-1]), flush=True)
    for split in ("test_seen", "test"):
        print(f"\n{split} (written task accuracy, mean ± 95 % t-interval half-width over {len(runs)} seeds)\n")
        print("| family | " + " | ".join(f"seed {s}" for s in seed_list) + " | mean ± 95 % |")
        print("|---|" + "---|" * len(seed_list) + "---|")
        fams = sorted({f for r in runs for f in r[split] if f != "overall"}) + ["overall"]
        for fam in fams:
            v = np.array([r[split].get(fam, float("nan")) for r in runs])
            half = t95(len(v)) * float(v.std(ddof=1)) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
            print(f"| {fam} | " + " | ".join(f"{x:.2f}" for x in v) + f" | {v.mean():.3f} ± {half:.3f} |")


def wer(encoder: str, data: str, splits: list[str], sessions: int, base: str | None = None) -> None:
    from pathlib import Path

    from lws_core.model.asr import load_recognizer
    from lws_core.train.pretrain_encoder import (
        _load_split,
        dataset_tokenizer,
        transcribe_sessions,
        wer_difference_interval,
        wer_interval,
        word_error_rate,
    )

    rec = load_recognizer(encoder)
    base_rec = load_recognizer(base) if base else None
    tok = dataset_tokenizer(Path(data))
    for split in splits:
        ev = _load_split(Path(data), split, rec.speech.unit_samples, limit=sessions, tok=tok)
        hyps = transcribe_sessions(rec, ev)
        refs = [" ".join(t for t in s.targets if t) for s in ev]
        w, ci = word_error_rate(refs, hyps), wer_interval(refs, hyps)
        span = "" if ci is None else f" (95 % interval {ci[0]:.3f}-{ci[1]:.3f})"
        print(f"{split}: WER {w:.3f}{span} over {len(ev)} sessions")
        if base_rec is not None:
            base_hyps = transcribe_sessions(base_rec, ev)
            bw, dci = word_error_rate(refs, base_hyps), wer_difference_interval(refs, hyps, base_hyps)
            dspan = "" if dci is None else f" (95 % interval {dci[0]:+.3f} to {dci[1]:+.3f})"
            print(f"    against --base: WER {bw:.3f}; paired difference {w - bw:+.3f}{dspan}")
        for r, h in [(r, h) for r, h in zip(refs, hyps, strict=True) if r][:3]:
            print(f"    ref {r!r}\n    hyp {h!r}")
        print("    " + breakdown(rec, ev, refs, hyps))
        print("    " + by_voice(data, split, refs, hyps))


def by_voice(data: str, split: str, refs: list[str], hyps: list[str]) -> str:
    """WER per espeak language and per voice variant (each pooled over the other), so a split's errors can be
    traced to the voices that make them (the held-out voices are a language, ``en-gb-x-gbcwmd``, and two
    variants, ``f4`` and ``klatt3``; one voice alone says too few words to compare)."""
    from collections import defaultdict

    from datasets import load_from_disk

    from lws_core.audio.tts import label_language
    from lws_core.train.pretrain_encoder import word_error_rate

    voices = [v.split("@")[0] for v in load_from_disk(data)[split]["voice"][: len(refs)]]
    lines = []
    for what, key in (("language", label_language), ("variant", lambda v: v.split("+")[-1])):
        groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
        for v, r, h in zip(voices, refs, hyps, strict=True):
            groups[key(v)][0].append(r)
            groups[key(v)][1].append(h)
        parts = [f"{g} {w:.3f} ({sum(len(r.split()) for r in rs)} words)"
                 for g, (rs, hs) in sorted(groups.items()) if (w := word_error_rate(rs, hs)) is not None]
        lines.append(f"WER by {what}: " + ", ".join(parts))
    return "\n    ".join(lines)


def breakdown(rec, sessions, refs: list[str], hyps: list[str]) -> str:  # noqa: ANN001 - CTCRecognizer, _Session
    """Where the words are lost: share of reference words heard right (jiwer alignment), numbers (by digits)
    against other words; and per unit, share of words found in that unit's own hypothesis, for words
    wholly inside the unit against words that began in the previous one (the boundary)."""
    from collections import Counter

    import jiwer

    from lws_core.model.asr import greedy_path, unit_log_probs

    ok, tot, miss = Counter(), Counter(), Counter()
    for r, h in zip(refs, hyps, strict=True):
        if not r.strip():
            continue
        out = jiwer.process_words(r, h)
        for al in out.alignments[0]:
            said = out.references[0][al.ref_start_idx : al.ref_end_idx]
            heard = out.hypotheses[0][al.hyp_start_idx : al.hyp_end_idx]
            for j, word in enumerate(said):
                kind = f"{len(word)}-digit" if word.isdigit() else "other"
                tot[kind] += 1
                ok[kind] += al.type == "equal"
                if kind == "2-digit" and al.type != "equal":
                    miss[two_digit_miss(word, heard[j] if j < len(heard) else "")] += 1
    at_edge = Counter()
    for s in sessions:
        paths = greedy_path(unit_log_probs(rec, s.units))
        for u, items in enumerate(s.items):
            hyp = [rec.vocab.token_ids[i - 1] for i, _ in paths[u]]
            for ids, _end, start in items:
                kind = "began in the previous unit" if start < 0 else "inside the unit"
                at_edge[kind, "all"] += 1
                at_edge[kind, "ok"] += any(hyp[i : i + len(ids)] == ids for i in range(len(hyp)))
    words = ", ".join(f"{k} {ok[k]}/{tot[k]} ({ok[k] / tot[k]:.2f})" for k in sorted(tot))
    edge = ", ".join(f"{k} {at_edge[k, 'ok']}/{at_edge[k, 'all']} ({at_edge[k, 'ok'] / at_edge[k, 'all']:.2f})"
                     for k in ("inside the unit", "began in the previous unit") if at_edge[k, "all"])
    misses = ", ".join(f"{k} {n}" for k, n in miss.most_common())
    return f"heard right: {words}\n    two-digit numbers missed: {misses or '-'}\n    found in their own unit: {edge}"


def two_digit_miss(said: str, heard: str) -> str:
    """What became of a two-digit number the recogniser missed (``heard``: the aligned hypothesis word, "" if none)."""
    if not heard:
        return "deleted"
    if not heard.isdigit():
        return "a word"
    if len(heard) == 1:
        return "only its tens digit" if heard == said[0] else "only its ones digit" if heard == said[1] else "one other digit"
    if len(heard) == 2:
        return "ones digit wrong" if heard[0] == said[0] else "tens digit wrong" if heard[1] == said[1] else "both digits wrong"
    return f"{len(heard)} digits"


def encoder_seeds(data: str, seed_list: list[int], work: str, overrides: list[str], sessions: int) -> None:
    """One recogniser per ``pretrain.encoder.seed`` (the current params.yaml plus ``--set``; one already in
    ``--work`` is reused), then its held-out-voice WER from its report over ``sessions`` ``test_seen`` sessions,
    as a mean with a 95 % t-interval."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np
    from liberation import t95  # the liberation benchmark's interval, beside this script

    rows = []
    for seed in seed_list:
        out = Path(work) / f"encoder-seed{seed}"
        if not (out / "pretrain_report.json").is_file():
            sets = [x for o in [*overrides, f"pretrain.encoder.seed={seed}", f"pretrain.encoder.eval_sessions={sessions}"]
                    for x in ("--set", o)]
            cmd = [str(Path(sys.executable).with_name("lws")), "pretrain", "encoder", "--data", data, "--out", str(out), "--quiet", *sets]
            subprocess.run(cmd, check=True)
        r = json.loads((out / "pretrain_report.json").read_text())
        rows.append((seed, r["wer"], r["wer_sessions"], r["wall_s"]))
        print(f"seed {seed}: WER {r['wer']:.3f} over {r['wer_sessions']} sessions ({r['wall_s']:.0f} s)", flush=True)
    print("\n| seed | WER | sessions | stage s |\n|---|---|---|---|")
    for seed, w, n, wall in rows:
        print(f"| {seed} | {w:.3f} | {n} | {wall:.0f} |")
    v = np.array([w for _, w, *_ in rows])
    half = t95(len(v)) * float(v.std(ddof=1)) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    print(f"\nWER over {len(rows)} seeds: {v.mean():.3f} ± {half:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("ceiling", help="the backbone's text ceiling")
    c.add_argument("--backbone", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--limit", type=int, default=100, help="graded sessions per split")
    c.add_argument("--show", type=int, default=0, help="print this many test_seen answers")
    c.add_argument("--encoder", help="also the cascade: this recogniser's transcript fed to the backbone")
    w = sub.add_parser("wer", help="the encoder's word error rate")
    w.add_argument("--encoder", required=True)
    w.add_argument("--data", required=True)
    w.add_argument("--splits", nargs="+", default=["test_seen"])
    w.add_argument("--sessions", type=int, default=400, help="first sessions of each split (400: all of the default test_seen)")
    w.add_argument("--base", help="another recogniser: its WER on the same sessions and the paired difference, with a 95 %% interval")
    sd = sub.add_parser("seeds", help="the text ceiling over several pretraining seeds, with a 95 %% interval")
    sd.add_argument("--data", required=True)
    sd.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    sd.add_argument("--work", default="/tmp/lws-backbone-seeds")
    sd.add_argument("--limit", type=int, default=100, help="graded sessions per split")
    sd.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    es = sub.add_parser("encoder-seeds", help="the recogniser's WER over several pretraining seeds, with a 95 %% interval")
    es.add_argument("--data", required=True)
    es.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    es.add_argument("--work", default="/tmp/lws-encoder-seeds")
    es.add_argument("--sessions", type=int, default=100, help="test_seen sessions the WER is measured on")
    es.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    a = ap.parse_args()
    if a.what == "ceiling":
        ceiling(a.backbone, a.data, a.limit, a.show, a.encoder)
    elif a.what == "seeds":
        seeds(a.data, a.seeds, a.work, a.limit, a.set)
    elif a.what == "encoder-seeds":
        encoder_seeds(a.data, a.seeds, a.work, a.set, a.sessions)
    else:
        wer(a.encoder, a.data, a.splits, a.sessions, a.base)


if __name__ == "__main__":
    main()
