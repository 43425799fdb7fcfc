"""Using a trained model: load it (assets dir or MLflow run id), transcribe or caption audio,
and export it with LoRA merged into a standalone model dir.

A trained assets dir (``<train.dir>/model``) holds the trained parameters and, in
``slam.json``, the composed config they were trained with, so it rebuilds the whole system
on top of the zoo models it names.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet, Recording
from peft import PeftModel
from tqdm import tqdm

from slam.config import SlamConfig, as_dict, to_config
from slam.corpora.validate import short_error, validate_cuts
from slam.data import AudioTextDataset, batches_of, cut_text
from slam.model import ASSETS_INFO, ENCODER_WEIGHTS, SpeechLLM, build_speech_llm, load_assets
from slam.projectors import save_projector
from slam.utils import atomic_dir, atomic_write_text, setup_runtime

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a"}


def resolve_model(model: str | Path) -> Path:
    """An assets dir as is; otherwise an MLflow run id whose ``model`` artifacts are fetched."""
    path = Path(model)
    if path.is_dir():
        if not (path / ASSETS_INFO).exists():
            raise FileNotFoundError(f"{path} is not a trained assets dir (no {ASSETS_INFO})")
        return path
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=str(model), artifact_path="model"))
    except Exception as exc:  # MLflow raises several types for an unknown run
        raise FileNotFoundError(
            f"{model!r} is neither an assets dir nor an MLflow run with a model: {exc}"
        ) from None


def trained_config(assets: Path) -> SlamConfig:
    info = json.loads((assets / ASSETS_INFO).read_text())
    if "config" not in info:
        raise ValueError(f"{assets / ASSETS_INFO} has no config: retrain with this version of slam")
    cfg = to_config(info["config"])
    if not Path(cfg.llm.path).exists() and (assets / cfg.llm.path).exists():
        cfg.llm.path = str(assets / cfg.llm.path)  # an export keeps its LLM inside the dir
    return cfg


def load_trained(model: str | Path, device: str | None = None) -> tuple[SlamConfig, SpeechLLM]:
    """The trained system with its encoder (it reads audio, not a cache), in eval mode."""
    assets = resolve_model(model)
    cfg = trained_config(assets)
    if device is not None:
        cfg.runtime.device = device
    speech_llm = build_speech_llm(cfg, with_encoder=True)
    load_assets(speech_llm, assets)
    return cfg, speech_llm.to(setup_runtime(cfg.runtime)).eval()


def cuts_from_inputs(inputs: Iterable[str | Path], sample_rate: int = 16000) -> CutSet:
    """Audio files, directories of them, or Lhotse manifests (``*.jsonl.gz``) as one CutSet."""
    cuts: list[Any] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise FileNotFoundError(f"input {item} does not exist")
        if item.name.endswith((".jsonl.gz", ".jsonl")):
            cuts += list(CutSet.from_file(item))
            continue
        files = sorted(p for p in item.rglob("*") if p.suffix in AUDIO_SUFFIXES) if item.is_dir() else [item]
        for path in files:
            try:
                rec = Recording.from_file(path, recording_id=str(path))
            except Exception as exc:
                raise ValueError(f"cannot read audio {path}: {short_error(exc)}") from None
            cuts.append(rec.to_cut())  # every channel: validation below downmixes
    # The same checks as the prepare stage (empty, silent, NaN/inf, truncated audio), naming
    # the file; other sample rates are resampled on load.
    checked, _ = validate_cuts(CutSet.from_cuts(cuts), sample_rate, require_text=False)
    return checked


@torch.no_grad()
def transcribe(
    cfg: SlamConfig, model: SpeechLLM, cuts: CutSet, batch_size: int = 8, num_beams: int = 1
) -> list[dict[str, str]]:
    """One row per cut: ``id``, ``hyp`` and ``ref`` when the cut has a transcript."""
    dataset = AudioTextDataset(model.tokenizer, model.encoder)
    rows = []
    for batch_cuts in tqdm(list(batches_of(cuts, batch_size)), desc="transcribe", unit="batch"):
        batch = dataset[batch_cuts]
        hyps = model.transcribe_batch(batch, cfg.runtime, num_beams, cfg.decode.max_new_tokens)
        for cut, hyp in zip(batch_cuts, hyps):
            rows.append({"id": cut.id, "hyp": hyp, **({"ref": cut_text(cut)} if cut.supervisions else {})})
    return rows


def write_results(rows: list[dict[str, str]], path: str | Path) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def export_merged(model: str | Path, out: str | Path) -> Path:
    """A standalone copy: LoRA merged into the LLM (``llm/``), projector, encoder weights."""
    assets = resolve_model(model)
    cfg, speech_llm = load_trained(assets, device="cpu")
    llm = speech_llm.llm
    if isinstance(llm, PeftModel):
        if speech_llm.prefix_length:
            raise ValueError("prefix tuning adds virtual tokens that cannot be merged into weights; "
                             f"load {assets} with its adapter instead")
        llm = llm.merge_and_unload()
    out = Path(out)
    with atomic_dir(out) as tmp:
        llm.save_pretrained(tmp / "llm")
        speech_llm.tokenizer.save_pretrained(tmp / "llm")
        save_projector(speech_llm.projector, tmp)
        if (assets / ENCODER_WEIGHTS).exists():
            shutil.copy2(assets / ENCODER_WEIGHTS, tmp / ENCODER_WEIGHTS)
        cfg.llm.path, cfg.peft.method = "llm", "none"  # relative: resolved against the dir
        info = json.loads((assets / ASSETS_INFO).read_text())
        info.update(config=as_dict(cfg), exported_from=str(assets))
        (tmp / ASSETS_INFO).write_text(json.dumps(info, indent=2))
    log.info("exported %s to %s", assets, out)
    return out
