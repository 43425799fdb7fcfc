"""Zero-shot text translation of the real asterisk_fr prompts' reference French by a chat LLM.

    python scripts/mmt_probe.py llms/smollm2-135m-instruct 100 --out metrics/experiments/MMT_PROBE

Which LLM knows enough French for the speech-translation recipe before any training: every
(len/N)-th prompt's reference French transcript, one chat turn asking for the English
translation, greedy; BLEU and chrF (sacrebleu) against the prompt's English text. A model
directory is any causal LM transformers loads (the zoo's imports, e.g. llms/<name>).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import sacrebleu
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from slam.config import load_config
from slam.data.corpora.asterisk import asterisk_fr
from slam.data.corpora.parallel import TRANSLATION
from slam.decode.hyps import write_hyps

REQUEST = "Translate this French sentence into English. Answer with the translation only.\n\n{text}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("llm", type=Path)
    parser.add_argument("prompts", type=int, help="how many prompts, spread over the set")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--out", type=Path, help="folder for <llm>.jsonl (hypotheses), <llm>.json")
    args = parser.parse_args()
    cuts, _ = asterisk_fr(load_config(args.params).corpus)
    cuts = list(cuts)[:: max(1, len(cuts) // args.prompts)][: args.prompts]
    tokenizer = AutoTokenizer.from_pretrained(args.llm)
    model = AutoModelForCausalLM.from_pretrained(args.llm, dtype=torch.float32).eval()
    rows, start = [], time.monotonic()
    for cut in cuts:
        sup = cut.supervisions[0]
        chat = [{"role": "user", "content": REQUEST.format(text=sup.text)}]
        text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False)
        answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        first_line = answer.split("\n")[0]  # a chat model may add notes after the translation
        rows.append({"id": cut.id, "source": sup.text, "ref": sup.custom[TRANSLATION], "hyp": first_line})
    hyps, refs = [r["hyp"] for r in rows], [r["ref"] for r in rows]
    scores = {"llm": args.llm.name, "prompts": len(rows),
              "bleu": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
              "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2),
              "minutes": round((time.monotonic() - start) / 60, 2)}  # fmt: skip
    print(json.dumps(scores), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_hyps(args.out / f"{args.llm.name}.jsonl", rows)
        (args.out / f"{args.llm.name}.json").write_text(json.dumps(scores, indent=1) + "\n")


if __name__ == "__main__":
    main()
