"""How much of a set's transcripts the CTC head can write: the share of tokens with no CTC class.

    python scripts/ctc_coverage.py data/asr/corpus asterisk_en test [--llm llms/smollm2-135m-instruct]

The CTC classes are the tokens of the training transcripts (``restrict_ctc``), counted as the
train stage counts them (``AudioTextDataset.token_counts``, no answer normaliser); joint decoding
cannot write a token outside them unless ``decode.ctc_spell_unknown`` spells it. Prints, per
``train.ctc_min_count`` 1, 2, 3, 5, 10, how many classes that leaves and the share of training
target tokens it spells, then per set the share of tokens and utterances with a token outside
the classes (min count 1) and the commonest such tokens.
"""

from __future__ import annotations

import argparse
from collections import Counter

from transformers import AutoTokenizer

from slam.data.cuts import AudioTextDataset, load_cuts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("sets", nargs="+")
    parser.add_argument("--llm", default="llms/smollm2-135m-instruct")
    args = parser.parse_args()
    dataset = AudioTextDataset(AutoTokenizer.from_pretrained(args.llm))
    counts = dataset.token_counts(load_cuts(args.corpus, "train"))
    total = sum(counts.values())
    for min_count in (1, 2, 3, 5, 10):
        spelled = sum(n for n in counts.values() if n < min_count)
        kept = sum(1 for n in counts.values() if n >= min_count)
        print(f"ctc_min_count {min_count}: {kept} classes, "
              f"{100 * spelled / total:.1f} % of training target tokens spelled")
    for name in args.sets:
        tokens = outside = utterances = with_outside = 0
        missing: Counter[str] = Counter()
        for cut in load_cuts(args.corpus, name):
            ids = dataset.tokenize(dataset.transcript(cut))
            unknown = [t for t in ids if t not in counts]
            tokens, outside = tokens + len(ids), outside + len(unknown)
            utterances, with_outside = utterances + 1, with_outside + bool(unknown)
            missing.update(dataset.tokenizer.decode([t]) for t in unknown)
        print(f"{name}: {outside} of {tokens} tokens ({100 * outside / max(tokens, 1):.1f} %) have no class; "
              f"{with_outside} of {utterances} utterances hold one; commonest: {missing.most_common(25)}")


if __name__ == "__main__":
    main()
