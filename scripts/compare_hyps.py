"""Is system B's WER really lower than A's? A paired bootstrap over the utterances.

    python scripts/compare_hyps.py A.jsonl B.jsonl [--half dev|test|all] [--normalizer english_v1]

A and B are hypothesis files of the same set (``ref`` and ``hyp`` per id: the decode stage's
``exp/asr/hyps/<set>.<system>.jsonl`` or ``scripts/dev_sweep.py --hyps``). ``--half`` keeps the
dev or test half of a real set as ``corpus.real_dev_fraction=0.5`` splits it (by prompt text),
so experiments decide on the dev half and report the test half. Prints one JSON line: both
WERs, B - A and its 95 % interval, and the share of resamples in which B was better. It measures
the sampling noise of the set only, not how much a retrained model would move.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slam.data.corpora.text import held_out_split
from slam.decode.hyps import read_hyps
from slam.score.metrics import paired_bootstrap_wer, score_wer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("system", type=Path)
    parser.add_argument("--half", choices=["dev", "test", "all"], default="all")
    parser.add_argument("--normalizer", default="english_v1")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    results = []
    for path in (args.baseline, args.system):
        rows = read_hyps(path)
        if args.half != "all":
            rows = [r for r in rows if held_out_split(r["ref"], 0.5) == args.half]
        refs, hyps = {r["id"]: r["ref"] for r in rows}, {r["id"]: r["hyp"] for r in rows}
        results.append(score_wer(refs, hyps, args.normalizer))
    out = paired_bootstrap_wer(*results, resamples=args.resamples)
    percent = {k: round(100 * v, 2) if k != "system_better" else round(v, 3) for k, v in out.items()}
    print(json.dumps({"half": args.half, "utterances": results[0]["summary"]["utterances"], **percent}))


if __name__ == "__main__":
    main()
