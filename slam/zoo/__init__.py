"""The model zoo: pretrained weights from registry packages, imported as Hugging Face folders.

``build_zoo`` imports every ``cfg.zoo.models`` entry into ``<zoo.dir>/<name>`` with the
importer the entry names (``IMPORTERS``); ``build_llm_zoo`` imports just the ``cfg.zoo.llms``
entry the recipe's ``llm.path`` names into ``<zoo.llm_dir>/<name>``. Each imported Whisper
must still transcribe a real recording and each pretrained causal LM complete a simple text
sensibly; each folder gets a ``zoo.json`` summary. Nothing is fetched from a model hub unless
a source is a hub id.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slam.config import ConfigError, SlamConfig, ZooConfig, ZooModelConfig
from slam.registry import Registry
from slam.utils import atomic_write_text

log = logging.getLogger(__name__)

# an importer: (entry, resolved source, empty output folder, **options) -> info for zoo.json
IMPORTERS: Registry[dict[str, Any]] = Registry("zoo importer")
MAX_CHECK_WER = 0.5
# The causal LM check: greedy continuation of a text every packaged LLM completes correctly
# (SmolLM2-135M, Qwen2.5-Coder-0.5B and Gemma-3-270M all do, in a few tokens). Chat models
# get it as a user turn through their chat template, base models as plain text (with BOS).
LLM_CHECK_TEXT = "The opposite of hot is"
LLM_CHECK_ANSWER = "cold"
LLM_CHECK_INSTRUCTION = "Complete: "
LLM_CHECK_TOKENS = 8
SUMMARY_FILE = "zoo.json"
DOWNLOADS = ".downloads"


class ZooCheckError(RuntimeError):
    """An imported model failed its sanity check (e.g. Whisper cannot transcribe)."""


def import_model(
    entry: ZooModelConfig,
    zoo_dir: str | Path,
    download_dir: str | Path,
    verify: Callable[[Path, dict[str, Any]], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Import one entry into ``<zoo_dir>/<entry.name>``, atomically.

    The importer writes into a hidden temp folder beside the target; ``verify`` (if given)
    runs on that folder; only then is it renamed into place. On any failure the temp folder
    is removed, so a model folder is either complete or absent.
    """
    from slam.zoo.sources import resolve_sources

    if not entry.name or "/" in entry.name or entry.name.startswith("."):
        raise ValueError(f"bad zoo model name {entry.name!r}")
    importer = IMPORTERS.get(entry.importer)  # fails early, listing the known importers
    zoo_dir = Path(zoo_dir)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    final = zoo_dir / entry.name
    tmp = zoo_dir / f".{entry.name}.tmp-{os.getpid()}"
    for stale in [*zoo_dir.glob(f".{entry.name}.tmp-*"), *zoo_dir.glob(f".{entry.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
    start = time.perf_counter()
    # importers that build models from configs (tiny test models) need no source
    source = resolve_sources(list(entry.source), download_dir) if entry.source else None
    try:
        tmp.mkdir()
        log.info("importing %s with %r from %s", entry.name, entry.importer, entry.source)
        info = dict(importer(entry, source, tmp, **options))
        if verify is not None:
            verify(tmp, info)
        _readable(tmp)
        old = zoo_dir / f".{entry.name}.old-{os.getpid()}"
        if final.exists():
            final.rename(old)  # replace in two renames: never a moment with a partial folder
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if source is not None:
            source.cleanup()
    seconds = time.perf_counter() - start
    log.info("imported %s in %.1f s (%s parameters)", entry.name, seconds, f"{info.get('params', 0):,}")
    return {
        "name": entry.name,
        "importer": entry.importer,
        "source": list(entry.source),
        "file": entry.file,
        "dir": str(final),  # no import time: zoo.json is a DVC output, the same on every rerun
        **info,
    }


def _readable(folder: Path) -> None:
    # some writers (safetensors) create files 0600; the zoo is shared, read-only data
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def normalize_text(text: str) -> str:
    """Lowercase, punctuation stripped (apostrophes kept), single spaces: for the check WER."""
    text = re.sub(r"[^\w\s']", " ", text.lower())
    return " ".join(text.replace("_", " ").split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        raise ValueError("empty reference text for the WER check")
    return float(jiwer.wer(ref, hyp))


def load_audio(path: str | Path, sample_rate: int = 16000) -> Any:
    """Read a recording as mono float32 at ``sample_rate`` (polyphase resampling)."""
    from math import gcd

    import numpy as np
    import soundfile as sf
    from scipy.signal import resample_poly

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        g = gcd(sr, sample_rate)
        audio = resample_poly(audio, sample_rate // g, sr // g).astype(np.float32)
    return audio


@functools.lru_cache(maxsize=2)
def _whisper(model_dir: str, version: tuple[int, int]) -> tuple[Any, Any]:
    """An imported Whisper folder's processor and model, loaded once per folder and ``version``
    (its inode and mtime: a re-imported folder is loaded again)."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(model_dir)
    return processor, WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()


def transcribe(model_dir: str | Path, audio_path: str | Path) -> str:
    """Transcribe one recording (≤ 30 s) with an imported Whisper folder, greedy, in English.

    The length cap is the saved ``max_length`` (448 tokens, prompt included): passing
    ``max_new_tokens`` as well would make transformers warn on every call.
    """
    import torch

    folder = os.stat(model_dir)
    processor, model = _whisper(str(model_dir), (folder.st_ino, folder.st_mtime_ns))
    rate = processor.feature_extractor.sampling_rate
    features = processor(load_audio(audio_path, rate), sampling_rate=rate, return_tensors="pt").input_features
    kwargs: dict[str, Any] = {}
    if getattr(model.generation_config, "is_multilingual", False):
        kwargs = {"language": "en", "task": "transcribe"}  # the check text is English
    with torch.inference_mode():
        ids = model.generate(features, **kwargs)
    return processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


def check_whisper(model_dir: str | Path, audio: str | Path, reference: str, name: str = "") -> dict[str, Any]:
    """Transcribe ``audio`` and fail unless the WER against ``reference`` is ≤ ``MAX_CHECK_WER``."""
    name = name or Path(model_dir).name
    hypothesis = transcribe(model_dir, audio)
    wer = word_error_rate(reference, hypothesis)
    log.info("check %s: WER %.3f\n  ref: %s\n  hyp: %s", name, wer, reference, hypothesis)
    if wer > MAX_CHECK_WER:
        raise ZooCheckError(
            f"imported Whisper {name} fails its check on {audio}: WER {wer:.2f} > {MAX_CHECK_WER}\n"
            f"  reference:  {reference}\n  hypothesis: {hypothesis}\n"
            "(a wrong tensor mapping, tokenizer or generation config is the usual cause)"
        )
    return {"audio": str(audio), "reference": reference, "hypothesis": hypothesis, "wer": round(wer, 4)}


def check_causal_lm(model_dir: str | Path, name: str = "") -> dict[str, Any]:
    """Greedy-complete ``LLM_CHECK_TEXT``; fail unless ``LLM_CHECK_ANSWER`` is in the answer.

    Loads the folder as training does (``AutoTokenizer``, ``AutoModelForCausalLM``): a few
    seconds, and what it catches (a scrambled tensor mapping, a wrong tokenizer, lost norm
    offsets) would otherwise show up only as a training run that never learns.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = name or Path(model_dir).name
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    chat = bool(tokenizer.chat_template)
    if chat:
        messages = [{"role": "user", "content": LLM_CHECK_INSTRUCTION + LLM_CHECK_TEXT}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    else:  # a base model: the tokenizer adds BOS itself if the model wants one
        prompt = LLM_CHECK_TEXT
        ids = tokenizer(prompt, return_tensors="pt").input_ids
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=LLM_CHECK_TOKENS,
            do_sample=False,
            pad_token_id=pad,
        )
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    passed = LLM_CHECK_ANSWER in normalize_text(answer).split()
    log.info("check %s: %r -> %r", name, LLM_CHECK_TEXT, answer)
    if not passed:
        raise ZooCheckError(
            f"imported LLM {name} fails its check: {LLM_CHECK_TEXT!r} "
            f"({'chat template' if chat else 'plain text'}) was completed as {answer!r}, "
            f"without {LLM_CHECK_ANSWER!r}\n(a wrong tensor mapping or tokenizer is the usual cause)"
        )
    return {"text": LLM_CHECK_TEXT, "chat_template": chat, "answer": answer, "expected": LLM_CHECK_ANSWER}


def build_zoo(cfg: SlamConfig) -> dict[str, Any]:
    """The zoo stage: import every ``cfg.zoo.models`` entry into ``zoo.dir``, write ``zoo.json``.

    Returns the summary that ``zoo.json`` holds.
    """
    return import_entries(cfg.zoo.models, cfg.zoo.dir, cfg.zoo)


def build_llm_zoo(cfg: SlamConfig) -> dict[str, Any]:
    """The zoo_llm stage: import the ``cfg.zoo.llms`` entry that ``llm.path`` names, only it.

    A ``llm.path`` outside ``zoo.llm_dir`` (a Hugging Face id, a folder of the user's) is
    loaded as given by the later stages; the folder then holds only an empty ``zoo.json``.
    """
    llm_dir = Path(cfg.zoo.llm_dir)
    catalog = {llm_dir / entry.name: entry for entry in cfg.zoo.llms}
    wanted = Path(cfg.llm.path)
    entry = catalog.get(wanted)
    if entry is None:
        if wanted.parent == llm_dir:
            known = ", ".join(str(path) for path in catalog) or "(none)"
            raise ConfigError(f"llm.path {cfg.llm.path} names no zoo.llms entry; known: {known}")
        log.info("llm.path %s is not a zoo LLM: the stages load it as given", cfg.llm.path)
    return import_entries([entry] if entry else [], llm_dir, cfg.zoo)


def import_entries(entries: list[ZooModelConfig], zoo_dir: str | Path, zoo: ZooConfig) -> dict[str, Any]:
    """Import ``entries`` into ``zoo_dir``, check Whispers and LLMs, write ``zoo.json``.

    Tiny random models (importers that report ``random``) are not checked.
    """
    zoo_dir = Path(zoo_dir)
    names = [m.name for m in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"zoo model names must be unique: {dupes}")
    for entry in entries:  # unknown importers fail before anything is downloaded
        IMPORTERS.get(entry.importer)
    if zoo.check_audio and not zoo.check_text:
        raise ValueError("zoo.check_audio is set but zoo.check_text is empty")

    models = []
    for i, entry in enumerate(entries, 1):
        log.info("[%d/%d] %s", i, len(entries), entry.name)

        def verify(folder: Path, info: dict[str, Any], name: str = entry.name) -> None:
            if info.get("random"):
                return
            if info.get("kind") == "whisper" and zoo.check_audio:
                info["check"] = check_whisper(folder, zoo.check_audio, zoo.check_text, name)
            elif info.get("kind") == "causal_lm":
                info["check"] = check_causal_lm(folder, name)

        # a per-entry dtype, if the config schema grows one (float32 otherwise)
        options = {"dtype": entry.dtype} if getattr(entry, "dtype", "") else {}
        models.append(import_model(entry, zoo_dir, zoo_dir / DOWNLOADS, verify=verify, **options))
    summary = {"models": models}
    atomic_write_text(zoo_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    log.info("zoo: %d models in %s", len(models), zoo_dir)
    return summary


# the importers register themselves in IMPORTERS on import
from slam.zoo import gguf_llm, hf, kokoro, tiny, whisper_ct2  # noqa: E402, F401
