"""Dev WER of a trained model under several decodings: the experiments of metrics/experiments/.

    python scripts/dev_sweep.py exp/asr/model 100 ctc g0 g0.5 b4:0.5 [--dev-cache data/asr/cache]

``MODEL`` is a trained model directory, or a training checkpoint (``step-*``, e.g. the one right
after the CTC warm-up) read with the config of ``--params`` (default ``params.yaml``).
A setting is ``ctc`` (the CTC head's best path alone), ``g<w>`` (greedy, CTC weight w; g0 = the
LLM alone) or ``b<beams>:<w>`` (``--ctc-max-words`` applies to both); a trailing ``s``
(``b4:0.5s``) turns on ``decode.ctc_spell_unknown``. It decodes the first N
cached dev cuts (of ``--dev-cache``, so models trained on other corpora are scored on the same
cuts; a model whose encoder trained
reads the audio of ``--corpus`` instead, default its own corpus) and prints one JSON line each,
with the WER by utterance length (the breakdown report's buckets); ``--hyps DIR`` also writes
each setting's hypotheses (``DIR/<set>.<setting>.jsonl``) for a closer look.

``by_half`` splits the decoded cuts in two by a hash of their text, as
``corpus.real_dev_fraction=0.5`` splits a real set (``held_out_split``: no prompt in both): on
a real set decoded whole, its ``dev`` half is what experiments decide by and its ``test`` half
what they report.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

from slam.config import DecodeConfig, load_config
from slam.data.cache import cache_dim, load_cached_cuts
from slam.data.corpora.text import held_out_split
from slam.data.cuts import AudioTextDataset, batches_of
from slam.decode.hyps import write_hyps
from slam.decode.inference import trained_config
from slam.decode.stage import within_window
from slam.model.speech_llm import build_speech_llm, load_assets
from slam.model.tuning import encoder_trains
from slam.score.metrics import score_wer
from slam.score.metrics.reports import duration_bucket
from slam.train.loop import load_trainable
from slam.utils import setup_runtime


def parse_setting(setting: str, decode: DecodeConfig) -> tuple[int, DecodeConfig]:
    """``g0.5`` -> (1 beam, CTC weight 0.5); ``b4:0.3`` -> (4, 0.3); ``b4:0.3s`` -> the same
    with unknown tokens spelled (``decode.ctc_spell_unknown``)."""
    spell = setting.endswith("s")
    setting = setting.removesuffix("s")
    if setting.startswith("g"):
        beams, weight = 1, setting[1:]
    else:
        beams, weight = setting[1:].split(":")
    return int(beams), dataclasses.replace(decode, ctc_weight=float(weight), ctc_spell_unknown=spell)


def breakdown(refs: dict, hyps: dict, group: dict[str, str], cfg) -> dict[str, dict]:
    """WER of each group of utterances (``group``: id -> label)."""
    out = {}
    for label in sorted(set(group.values())):
        ids = [i for i in refs if group[i] == label]
        scored = score_wer({i: refs[i] for i in ids}, {i: hyps[i] for i in ids}, cfg.score.normalizer)
        out[label] = {"utts": len(ids), "wer": round(100 * scored["summary"]["wer"], 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("cuts", type=int)
    parser.add_argument("settings", nargs="+")
    parser.add_argument("--dev-cache", help="cache dir whose dev set is decoded (default: the model's)")
    parser.add_argument("--set", default="dev", help="the cached set to decode (default dev)")
    parser.add_argument("--corpus", help="corpus dir whose set is decoded by a model whose encoder trained")
    parser.add_argument("--params", default="params.yaml", help="the config of a checkpoint MODEL")
    parser.add_argument("--hyps", type=Path, help="write each setting's hypotheses into this folder")
    parser.add_argument("--max-new-tokens", type=int, help="instead of the model's decode.max_new_tokens")
    parser.add_argument("--ctc-max-words", type=int, help="instead of the model's decode.ctc_max_words")
    args = parser.parse_args()
    checkpoint = (args.model / "state.json").exists()
    cfg = load_config(args.params) if checkpoint else trained_config(args.model)
    if args.max_new_tokens:
        cfg.decode.max_new_tokens = args.max_new_tokens
    if args.ctc_max_words is not None:
        cfg.decode.ctc_max_words = args.ctc_max_words
    device = setup_runtime(cfg.runtime)
    reads_audio = encoder_trains(cfg)  # no cache: the encoder runs on the audio
    if reads_audio:
        model = build_speech_llm(cfg, with_encoder=True)
    else:
        model = build_speech_llm(cfg, encoder_dim=cache_dim(cfg))
    if checkpoint:
        load_trainable(args.model, model)
    else:
        load_assets(model, args.model)
    model.to(device).eval()
    dataset = AudioTextDataset(model.tokenizer, model.encoder if reads_audio else None)
    dev_cfg = copy.deepcopy(cfg)
    dev_cfg.cache.dir = args.dev_cache or cfg.cache.dir
    dev_cfg.corpus.dir = args.corpus or cfg.corpus.dir
    if reads_audio:
        cuts = within_window(dev_cfg, [args.set], model.encoder.window_seconds)[args.set]
        cuts = cuts.subset(first=args.cuts)
    else:
        cuts = load_cached_cuts(dev_cfg, args.set).subset(first=args.cuts)
    bucket = {cut.id: duration_bucket(cut.duration) for cut in cuts}
    half = {cut.id: held_out_split(cut.supervisions[0].text, 0.5) for cut in cuts}
    for setting in args.settings:
        start, hyps, refs = time.monotonic(), {}, {}
        for batch_cuts in batches_of(cuts, cfg.decode.batch_size):
            batch = dataset[batch_cuts]
            if setting == "ctc":
                texts = model.ctc_greedy(batch["inputs"].to(device), batch["lengths"].to(device),
                                         encoded=batch["encoded"])
            else:
                beams, decode = parse_setting(setting, cfg.decode)
                texts = model.transcribe_batch(batch, cfg.runtime, decode, beams)
            hyps.update(zip(batch["ids"], texts))
            refs.update(zip(batch["ids"], batch["texts"]))
        minutes = round((time.monotonic() - start) / 60, 2)
        wer = score_wer(refs, hyps, cfg.score.normalizer)["summary"]["wer"]
        by_length, by_half = breakdown(refs, hyps, bucket, cfg), breakdown(refs, hyps, half, cfg)
        if args.hyps:
            rows = [{"id": i, "ref": refs[i], "hyp": hyps[i]} for i in refs]
            write_hyps(args.hyps / f"{args.set}.{setting}.jsonl", rows)
        print(json.dumps({"model": str(args.model), "set": args.set, "setting": setting,
                          "dev_wer": round(100 * wer, 2), "minutes": minutes, "by_length": by_length,
                          "by_half": by_half}),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
