"""Decoding: the trained LLM-based system and the Whisper baseline, hypotheses per cut.

Both write ``<dir>/<set>.beam<N>.jsonl`` (``id``, ``ref``, ``hyp``) plus ``decode.json`` with
timings, so the score stage treats every system alike.

Decoding is resumable, a (set, beam) at a time: each finished hypothesis file is recorded in
``progress.json`` with a key of the model and decoding settings and a digest of the set's
cuts. A rerun keeps the files whose record still matches and decodes the rest. (Under DVC
this needs ``persist: true`` on the output, or DVC deletes it before the rerun.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from lhotse import CutSet
from tqdm import tqdm
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from slam.config import ConfigError, DecodeConfig, SlamConfig, as_dict
from slam.data.cache import cache_key, load_cached_cuts
from slam.data.cuts import AudioTextDataset, batches_of, cut_text, fit_window, load_cuts
from slam.decode.hyps import CTC_READING, RUN_FILE, write_hyps
from slam.model.speech_llm import ASSETS_INFO, MODEL, build_speech_llm, load_assets
from slam.recipes import recipe_of
from slam.track.tracking import start_run
from slam.train.distributed import gather_objects, is_main, rank, world_size
from slam.train.whisper_finetune import check_finetunable
from slam.utils import atomic_write_json, autocast, setup_runtime

log = logging.getLogger(__name__)
PROGRESS = "progress.json"


def fingerprint(path: str | Path) -> str:
    """A key of a model dir (or file) that changes when its files do: every file's relative
    path and size, the whole content of small files, the first and last MiB of large ones
    (hashing gigabytes of LLM weights on every rerun would cost more than it protects)."""
    root = Path(path)
    digest = hashlib.sha256()
    if not root.exists():  # a hub id: the name is all there is to go by
        return hashlib.sha256(str(path).encode()).hexdigest()[:16]
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root) if root.is_dir() else file.name}:{size}\n".encode())
        with file.open("rb") as f:
            if size <= 4 << 20:
                digest.update(f.read())
            else:
                digest.update(f.read(1 << 20))
                f.seek(-(1 << 20), 2)
                digest.update(f.read())
    return digest.hexdigest()[:16]


def decode_key(*parts: object) -> str:
    """A key of everything that shapes the hypotheses (model fingerprints, settings)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def set_digest(cuts: CutSet) -> str:
    """What a hypothesis file was decoded from: the ids, durations and references of a set."""
    rows = [(c.id, round(c.duration, 4), cut_text(c)) for c in cuts]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def read_progress(out_dir: Path) -> dict[str, Any]:
    try:
        progress = json.loads((out_dir / PROGRESS).read_text())
    except (OSError, json.JSONDecodeError):
        return {"done": {}}
    return progress if isinstance(progress, dict) and isinstance(progress.get("done"), dict) else {"done": {}}


def decode_sets(
    sets: dict[str, CutSet],
    dcfg: DecodeConfig,
    transcribe: Callable[[CutSet, int], list[str]],
    key: str | None = None,
) -> dict:
    """Run ``transcribe(batch, num_beams)`` over every set and beam width; write hypotheses.

    Under torchrun each rank decodes every world_size-th batch; rank 0 gathers the batches
    back into their original order and writes them, so no utterance is lost or doubled.

    With a ``key`` (see :func:`decode_key`), a hypothesis file that an earlier run finished
    with the same key and the same cuts is kept, not decoded again (see the module doc).
    """
    out_dir = Path(dcfg.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Every rank reads the record before rank 0 writes to it in this run (each set ends in a
    # gather), so all ranks take the same decisions.
    wanted = {f"{name}.beam{beams}" for name in sets for beams in dcfg.num_beams}
    previous = read_progress(out_dir)["done"]
    if is_main():
        for label in set(previous) - wanted:  # decoded by an earlier run, no longer asked for
            (out_dir / f"{label}.jsonl").unlink(missing_ok=True)
    # what is on disk and valid: the earlier records still asked for, then this run's
    done_files: dict[str, Any] = {k: v for k, v in previous.items() if k in wanted}
    timing = {}
    for name, cuts in sets.items():
        audio_seconds = sum(c.duration for c in cuts)
        digest = set_digest(cuts)
        batches = list(batches_of(cuts, dcfg.batch_size))
        mine = list(range(rank(), len(batches), world_size()))
        for beams in dcfg.num_beams:
            label = f"{name}.beam{beams}"
            record = previous.get(label) or {}
            if (key is not None and record.get("key") == key and record.get("set") == digest
                    and (out_dir / f"{label}.jsonl").is_file()):
                timing[label] = record["timing"]
                log.info("%s beam %d: decoded by an earlier run with this model: kept", name, beams)
                continue
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
            write_hyps(out_dir / f"{label}.jsonl", rows)
            timing[label] = {
                "utterances": len(rows), "seconds": seconds, "rtf": seconds / max(audio_seconds, 1e-9)
            }
            if key is not None:  # the file is complete: record it, so a rerun keeps it
                done_files[label] = {"key": key, "set": digest, "timing": timing[label]}
                atomic_write_json(out_dir / PROGRESS, {"done": done_files})
            log.info("%s beam %d: %d utterances, RTF %.3f", name, beams, len(rows), timing[label]["rtf"])
    if is_main() and (key is not None or previous):
        atomic_write_json(out_dir / PROGRESS, {"done": {k: v for k, v in done_files.items() if k in timing}})
    return timing


def decode_and_record(
    cfg: SlamConfig,
    system: str,
    run_id: str | None,
    sets: dict[str, CutSet],
    dcfg: DecodeConfig,
    transcribe: Callable[[CutSet, int], list[str]],
    key: str | None = None,
) -> dict:
    """Decode, then (rank 0) write timings and the MLflow run id beside the hypotheses."""
    if not is_main():
        return decode_sets(sets, dcfg, transcribe, key)
    with start_run(cfg, system, run_id=run_id) as run:
        timing = decode_sets(sets, dcfg, transcribe, key)
        atomic_write_json(Path(dcfg.dir) / "decode.json", timing)
        mlflow.log_metrics({f"rtf_{k}": v["rtf"] for k, v in timing.items()})
        atomic_write_json(Path(dcfg.dir) / RUN_FILE, {"mlflow_run_id": run.info.run_id})
    return timing


def decode(cfg: SlamConfig) -> dict:
    """The decode stage: zoo models + trained assets -> hypotheses for each test set."""
    device = setup_runtime(cfg.runtime)
    recipe = recipe_of(cfg)
    for name in ("ctc_weight", "ctc_max_words"):  # both read the CTC head's transcript
        value = getattr(cfg.decode, name)
        if value > 0 and not recipe.joint_ctc_decoding:
            raise ConfigError(f"decode.{name}={value}: the CTC head reads a transcript, recipe "
                              f"{cfg.recipe!r} writes other answers; set decode.{name}=0")  # fmt: skip
    assets = Path(cfg.train.dir) / MODEL
    info = json.loads((assets / ASSETS_INFO).read_text())
    use_cache = info["use_cache"]
    if use_cache:
        model = build_speech_llm(cfg, encoder_dim=recipe.llm_input_dim(cfg))
        sets = {name: load_cached_cuts(cfg, name) for name in cfg.decode.sets}
    else:
        model = build_speech_llm(cfg, with_encoder=True)
        sets = within_window(cfg, cfg.decode.sets, model.encoder.window_seconds)
    load_assets(model, assets).to(device).eval()
    dataset = AudioTextDataset(model.tokenizer, None if use_cache else model.encoder)
    sets = recipe.prepare_decoding(cfg, sets, dataset, assets, device, use_cache)

    def transcribe(cuts: CutSet, beams: int) -> list[str]:
        batch = dataset[cuts]
        assert [c.id for c in cuts] == batch["ids"], "dataset must keep the batch order"
        return model.transcribe_batch(batch, cfg.runtime, cfg.decode, beams)

    key = decode_key(
        "llm", fingerprint(assets), fingerprint(cfg.llm.path),
        cache_key(cfg) if use_cache else fingerprint(cfg.encoder.path),
        as_dict(cfg)["encoder"], as_dict(cfg)["projector"], as_dict(cfg)["llm"], as_dict(cfg)["peft"],
        cfg.train.prompt, cfg.train.system_prompt, cfg.runtime.precision,
        cfg.decode.batch_size, cfg.decode.max_new_tokens,
        *([cfg.decode.ctc_weight, cfg.decode.ctc_pre_beam] if cfg.decode.ctc_weight > 0 else []),
        *([("ctc_max_words", cfg.decode.ctc_max_words)] if cfg.decode.ctc_max_words > 0 else []),
        *([("ctc_spell_unknown", True)] if cfg.decode.ctc_spell_unknown and cfg.decode.ctc_weight else []),
        *([cfg.decode.keyword_bonus] if cfg.decode.keyword_bonus > 0 else []),
        *recipe.decode_key(cfg),  # e.g. the biasing lists shape the prompts
    )  # fmt: skip
    timing = decode_and_record(cfg, "llm", info["mlflow_run_id"], sets, cfg.decode, transcribe, key)
    if is_main():  # more systems from the same model: CTC readings, CLAP-Refine, the cascade
        recipe.after_decoding(cfg, sets, dataset, model, transcribe, assets)
    return timing


def within_window(cfg: SlamConfig, names: list[str], window: float | None) -> dict[str, CutSet]:
    """The corpus sets ``names`` for an encoder that reads audio: a cut longer than its
    ``window`` is kept, logged, and heard up to the window, as the cache stage stores it (so a
    model decodes the same cuts with and without the cache)."""
    return {name: fit_window(load_cuts(cfg.corpus.dir, name), window, f"set {name}", "truncate")[0]
            for name in names}  # fmt: skip


def ctc_readings(cfg: SlamConfig, sets: dict[str, CutSet], dataset: AudioTextDataset, model) -> None:
    """``<set>.ctc.jsonl``: the CTC head's best path alone, the projector's own transcript."""
    device = next(model.projector.parameters()).device
    for name, cuts in sets.items():
        rows = []
        for batch_cuts in batches_of(cuts, cfg.decode.batch_size):
            batch = dataset[batch_cuts]
            with autocast(cfg.runtime, device):
                hyps = model.ctc_greedy(batch["inputs"].to(device), batch["lengths"].to(device),
                                        encoded=batch["encoded"])  # fmt: skip
            rows += [{"id": i, "ref": t, "hyp": h} for i, t, h in zip(batch["ids"], batch["texts"], hyps)]
        write_hyps(Path(cfg.decode.dir) / f"{name}.{CTC_READING}.jsonl", rows)
        log.info("%s: the CTC head's own reading written", name)


def decode_baseline(cfg: SlamConfig) -> dict:
    """The baseline stage: the recipe's simplest system (Whisper's own decoder for speech
    recipes, the most frequent training caption for captioning)."""
    if cfg.baseline.finetune_minutes > 0:
        check_finetunable(cfg)  # before minutes of decoding, not after
    return recipe_of(cfg).baseline(cfg)


def decode_whisper(cfg: SlamConfig) -> dict:
    """Whisper's own decoder on the same sets (the paper's "Whisper Enc. + Whisper Dec." row)."""
    device = setup_runtime(cfg.runtime)
    model = WhisperForConditionalGeneration.from_pretrained(cfg.encoder.path).to(device).eval()
    processor = WhisperProcessor.from_pretrained(cfg.encoder.path)
    sample_rate = processor.feature_extractor.sampling_rate
    multilingual = bool(getattr(model.generation_config, "is_multilingual", False))
    # recipe st: Whisper's own speech translation into English (the only target it knows)
    task = recipe_of(cfg).whisper_task
    if task == "translate" and (not multilingual or cfg.corpus.translation_language != "en"):
        raise ConfigError(f"recipe st's Whisper baseline translates into English with a multilingual "
                          f"Whisper; encoder.path {cfg.encoder.path} / corpus.translation_language "
                          f"{cfg.corpus.translation_language!r} do not allow it")  # fmt: skip
    language = {"language": cfg.corpus.language, "task": task} if multilingual else {}

    window = processor.feature_extractor.n_samples  # Whisper's 30 s chunk, in samples

    @torch.no_grad()
    def generate(waves: list[np.ndarray], beams: int) -> list[str]:
        # Longer than the chunk: all of it, decoded by transformers' sequential long-form
        # algorithm (30 s windows, moved on by the predicted timestamps), never cut to 30 s.
        long_form = len(waves) == 1 and len(waves[0]) > window
        whole = {"truncation": False, "padding": "longest", "return_attention_mask": True}
        feats = processor.feature_extractor(waves, sampling_rate=sample_rate, return_tensors="pt",
                                            **(whole if long_form else {}))  # fmt: skip
        inputs = {}
        if long_form:
            inputs = {"attention_mask": feats.attention_mask.to(device), "return_timestamps": True}
        # the same autocast as the LLM-based system: padded to 30 s, Whisper's encoder dominates
        with autocast(cfg.runtime, device):
            ids = model.generate(feats.input_features.to(device), num_beams=beams,
                                 max_new_tokens=cfg.baseline.max_new_tokens, **language, **inputs)
        return [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]

    def transcribe(cuts: CutSet, beams: int) -> list[str]:
        # [channels, samples] -> mono: the average of the channels, as the encoders take it
        waves = [np.asarray(c.resample(sample_rate).load_audio().mean(axis=0)) for c in cuts]
        short = [i for i, w in enumerate(waves) if len(w) <= window]
        texts = dict(zip(short, generate([waves[i] for i in short], beams) if short else []))
        texts.update({i: generate([w], beams)[0] for i, w in enumerate(waves) if i not in texts})
        return [texts[i] for i in range(len(waves))]

    sets = {name: load_cuts(cfg.corpus.dir, name) for name in cfg.baseline.sets}
    key = decode_key("whisper", fingerprint(cfg.encoder.path), cfg.baseline.batch_size,
                     cfg.baseline.max_new_tokens, cfg.runtime.precision, *language.values())
    return decode_and_record(cfg, "whisper", None, sets, cfg.baseline, transcribe, key)
