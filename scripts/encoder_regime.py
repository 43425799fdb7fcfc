"""Does Whisper's encoder, run on an utterance's true length, still hold what its own decoder
needs? A diagnostic of metrics/experiments/ (session 30).

    python scripts/encoder_regime.py data/asr/corpus/asterisk_en.jsonl.gz 110 [--model models/whisper-tiny.en]

Whisper tiny.en's own decoder (greedy) transcribes every N-th cut of the manifest from its
encoder's outputs in four regimes: the true length (what the cache stores and the LLM reads),
10 s and 30 s of silence context with only the true length's outputs kept, and the whole 30 s
window (what the shipped model reads). The decoder never saw truncated outputs and runs on past
the speech, so each WER is also given for hypotheses cut to the reference's word count (an
oracle length): that says whether the words are in the outputs. One JSON line per regime.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from lhotse import CutSet
from transformers import WhisperForConditionalGeneration, WhisperTokenizer
from transformers.modeling_outputs import BaseModelOutput

from slam.config import EncoderConfig
from slam.data.cuts import cut_text
from slam.model.encoders.whisper import WhisperEncoder
from slam.score.metrics import score_wer

# regime -> (encoder.context_seconds, keep only the true length's outputs)
REGIMES = {
    "true length": (0.0, True),
    "10 s context, true length kept": (10.0, True),
    "30 s context, true length kept": (30.0, True),
    "30 s window (shipped)": (30.0, False),
}


@torch.no_grad()
def transcribe(
    model: WhisperForConditionalGeneration, encoder: WhisperEncoder, cut, keep_true_length: bool
) -> list[int]:
    inputs = encoder.load_input(cut)[None]
    lengths = torch.tensor([inputs.shape[1]])
    if keep_true_length:
        states, _ = encoder.encode(inputs, lengths)
    else:
        padded, _ = encoder.pad_with_silence(inputs, lengths)
        states = encoder.encoder(padded.transpose(1, 2)).last_hidden_state
    return model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states), max_new_tokens=64,
                          num_beams=1)[0]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("manifest")
    parser.add_argument("n", type=int, help="cuts: every len/N-th of the manifest")
    parser.add_argument("--model", default="models/whisper-tiny.en")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuts = list(CutSet.from_file(args.manifest))
    cuts = cuts[:: max(1, len(cuts) // args.n)][: args.n]
    refs = {c.id: cut_text(c) for c in cuts}
    model = WhisperForConditionalGeneration.from_pretrained(args.model).eval()
    tokenizer = WhisperTokenizer.from_pretrained(args.model)
    for name, (context, keep_true_length) in REGIMES.items():
        encoder = WhisperEncoder(EncoderConfig(path=args.model, context_seconds=context)).eval()
        start, hyps = time.monotonic(), {}
        for cut in cuts:
            hyps[cut.id] = tokenizer.decode(transcribe(model, encoder, cut, keep_true_length),
                                            skip_special_tokens=True).strip()  # fmt: skip
        cut_to_length = {i: " ".join(h.split()[: len(refs[i].split())]) for i, h in hyps.items()}
        print(json.dumps({"regime": name, "cuts": len(cuts),
                          "wer": score_wer(refs, hyps)["summary"]["wer"],
                          "wer_oracle_length": score_wer(refs, cut_to_length)["summary"]["wer"],
                          "seconds": round(time.monotonic() - start)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
