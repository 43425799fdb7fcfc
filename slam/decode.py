"""Decoding: the trained LLM-based system and the Whisper baseline, hypotheses per cut.

Both write ``<dir>/<set>.beam<N>.jsonl`` (``id``, ``ref``, ``hyp``) plus ``decode.json`` with
timings, so the score stage treats every system alike.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import mlflow
import numpy as np
import torch
from lhotse import CutSet
from tqdm import tqdm
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from slam.cache import cache_dim, load_cached_cuts
from slam.config import DecodeConfig, SlamConfig
from slam.data import AudioTextDataset, cut_text, load_cuts
from slam.distributed import gather_objects, is_main, rank, world_size
from slam.model import ASSETS_INFO, build_speech_llm, load_assets
from slam.tracking import start_run
from slam.train import MODEL
from slam.utils import atomic_write_json, atomic_write_text, autocast, setup_runtime

log = logging.getLogger(__name__)
RUN_FILE = "run.json"


def batches_of(cuts: CutSet, size: int) -> Iterable[CutSet]:
    """Fixed-size batches of cuts sorted by duration (little padding, deterministic order)."""
    ordered = list(cuts.sort_by_duration(ascending=False))
    for start in range(0, len(ordered), size):
        yield CutSet.from_cuts(ordered[start : start + size])


def write_hyps(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_hyps(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def decode_sets(
    sets: dict[str, CutSet],
    dcfg: DecodeConfig,
    transcribe: Callable[[CutSet, int], list[str]],
) -> dict:
    """Run ``transcribe(batch, num_beams)`` over every set and beam width; write hypotheses.

    Under torchrun each rank decodes every world_size-th batch; rank 0 gathers the batches
    back into their original order and writes them, so no utterance is lost or doubled.
    """
    out_dir = Path(dcfg.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timing = {}
    for name, cuts in sets.items():
        audio_seconds = sum(c.duration for c in cuts)
        batches = list(batches_of(cuts, dcfg.batch_size))
        mine = list(range(rank(), len(batches), world_size()))
        for beams in dcfg.num_beams:
            done, start = {}, time.monotonic()
            for index in tqdm(mine, desc=f"{name} beam{beams}", disable=not is_main()):
                batch = batches[index]
                hyps = transcribe(batch, beams)
                done[index] = [{"id": c.id, "ref": cut_text(c), "hyp": h} for c, h in zip(batch, hyps)]
            seconds = time.monotonic() - start
            gathered = {i: r for part in gather_objects(done) for i, r in part.items()}
            rows = [row for i in range(len(batches)) for row in gathered[i]]
            if not is_main():
                continue
            write_hyps(out_dir / f"{name}.beam{beams}.jsonl", rows)
            timing[f"{name}.beam{beams}"] = {
                "utterances": len(rows), "seconds": seconds, "rtf": seconds / max(audio_seconds, 1e-9)
            }
            log.info("%s beam %d: %d utterances, RTF %.3f", name, beams, len(rows),
                     timing[f"{name}.beam{beams}"]["rtf"])
    return timing


def decode_and_record(
    cfg: SlamConfig,
    system: str,
    run_id: str | None,
    sets: dict[str, CutSet],
    dcfg: DecodeConfig,
    transcribe: Callable[[CutSet, int], list[str]],
) -> dict:
    """Decode, then (rank 0) write timings and the MLflow run id beside the hypotheses."""
    if not is_main():
        return decode_sets(sets, dcfg, transcribe)
    with start_run(cfg, system, run_id=run_id) as run:
        timing = decode_sets(sets, dcfg, transcribe)
        atomic_write_json(Path(dcfg.dir) / "decode.json", timing)
        mlflow.log_metrics({f"rtf_{k}": v["rtf"] for k, v in timing.items()})
        atomic_write_json(Path(dcfg.dir) / RUN_FILE, {"mlflow_run_id": run.info.run_id})
    return timing


def decode(cfg: SlamConfig) -> dict:
    """The decode stage: zoo models + trained assets -> hypotheses for each test set."""
    device = setup_runtime(cfg.runtime)
    assets = Path(cfg.train.dir) / MODEL
    info = json.loads((assets / ASSETS_INFO).read_text())
    use_cache = info["use_cache"]
    if use_cache:
        model = build_speech_llm(cfg, encoder_dim=cache_dim(cfg))
        sets = {name: load_cached_cuts(cfg, name) for name in cfg.decode.sets}
    else:
        model = build_speech_llm(cfg, with_encoder=True)
        sets = {name: load_cuts(cfg.corpus.dir, name) for name in cfg.decode.sets}
    load_assets(model, assets).to(device).eval()
    dataset = AudioTextDataset(model.tokenizer, None if use_cache else model.encoder)

    def transcribe(cuts: CutSet, beams: int) -> list[str]:
        batch = dataset[cuts]
        assert [c.id for c in cuts] == batch["ids"], "dataset must keep the batch order"
        with autocast(cfg.runtime, device):
            return model.generate(batch["inputs"].to(device), batch["lengths"].to(device),
                                  encoded=use_cache, num_beams=beams,
                                  max_new_tokens=cfg.decode.max_new_tokens)

    return decode_and_record(cfg, "llm", info["mlflow_run_id"], sets, cfg.decode, transcribe)


def decode_baseline(cfg: SlamConfig) -> dict:
    """Whisper's own decoder on the same sets (the paper's "Whisper Enc. + Whisper Dec." row)."""
    device = setup_runtime(cfg.runtime)
    model = WhisperForConditionalGeneration.from_pretrained(cfg.encoder.path).to(device).eval()
    processor = WhisperProcessor.from_pretrained(cfg.encoder.path)
    sample_rate = processor.feature_extractor.sampling_rate
    multilingual = bool(getattr(model.generation_config, "is_multilingual", False))
    language = {"language": "en", "task": "transcribe"} if multilingual else {}

    @torch.no_grad()
    def transcribe(cuts: CutSet, beams: int) -> list[str]:
        audio = [np.asarray(c.resample(sample_rate).load_audio()[0]) for c in cuts]
        feats = processor.feature_extractor(audio, sampling_rate=sample_rate, return_tensors="pt")
        ids = model.generate(feats.input_features.to(device), num_beams=beams,
                             max_new_tokens=cfg.baseline.max_new_tokens, **language)
        return [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]

    sets = {name: load_cuts(cfg.corpus.dir, name) for name in cfg.baseline.sets}
    return decode_and_record(cfg, "whisper", None, sets, cfg.baseline, transcribe)
