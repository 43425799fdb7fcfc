"""Using a trained model: load it (assets dir or MLflow run id), transcribe or caption audio,
and export it with LoRA merged into a standalone model dir.

A trained assets dir (``<train.dir>/model``) holds the trained parameters and, in
``slam.json``, the composed config they were trained with, so it rebuilds the whole system
on top of the zoo models it names.
"""

from __future__ import annotations

import gzip
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

from slam.config import SlamConfig, as_dict
from slam.data.corpora.validate import short_error, validate_cuts
from slam.data.cuts import AudioTextDataset, batches_of, cut_text, fit_window
from slam.model.projectors import save_projector
from slam.model.speech_llm import ASSETS_INFO, ENCODER_WEIGHTS, SpeechLLM, UntrustedModelError, trained_config  # noqa: F401
from slam.utils import atomic_dir, atomic_write_text

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


def load_trained(
    model: str | Path, device: str | None = None, trust_remote_code: bool = False
) -> tuple[SlamConfig, SpeechLLM]:
    """The trained system with its encoder (it reads audio, not a cache), in eval mode.

    ``trust_remote_code``: allow the stored config's code-loading switches (see
    :func:`slam.model.speech_llm.trained_config`); without it a model that sets one is refused
    before loading."""
    speech_llm = SpeechLLM.from_pretrained(resolve_model(model), device, trust_remote_code)
    return speech_llm.config, speech_llm


def _is_manifest(path: Path) -> bool:
    return path.name.lower().endswith((".jsonl.gz", ".jsonl"))


def _has_lines(manifest: Path) -> bool:
    try:
        with (gzip.open if manifest.name.lower().endswith(".gz") else open)(manifest, "rt") as f:
            return any(line.strip() for line in f)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read manifest {manifest}: {short_error(exc)}") from None


def audio_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """The audio files and manifests that ``inputs`` name: directories are searched for audio
    (suffixes in any case: ``B.WAV``); a missing input, or one with no audio in it, is an
    error naming it rather than a run with nothing to do."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise FileNotFoundError(f"input {item} does not exist")
        if _is_manifest(item):
            if not _has_lines(item):
                raise ValueError(f"input {item}: the manifest has no cuts")
            found.append(item)
            continue
        if not item.is_dir():
            found.append(item)
            continue
        files = sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise ValueError(f"input {item}: no audio files in this directory "
                             f"(looked for {', '.join(sorted(AUDIO_SUFFIXES))}, any case)")  # fmt: skip
        found += files
    return found


def cuts_from_inputs(inputs: Iterable[str | Path], sample_rate: int = 16000) -> CutSet:
    """Audio files, directories of them, or Lhotse manifests (``*.jsonl.gz``) as one CutSet."""
    cuts: list[Any] = []
    for path in audio_inputs(inputs):
        if _is_manifest(path):
            try:  # lhotse returns None for an empty file
                manifest = list(CutSet.from_file(path) or [])
            except Exception as exc:
                raise ValueError(f"cannot read manifest {path}: {short_error(exc)}") from None
            if not manifest:
                raise ValueError(f"input {path}: the manifest has no cuts")
            cuts += manifest
            continue
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
    cfg: SlamConfig, model: SpeechLLM, cuts: CutSet, batch_size: int = 8, num_beams: int = 1,
    skip_bad: bool = False,
) -> list[dict[str, str]]:
    """One row per cut: ``id``, ``hyp`` and ``ref`` when the cut has a transcript.

    A cut longer than the encoder's window is an error naming its file and length, before any
    decoding; with ``skip_bad`` it is left out (logged) instead."""
    # a user's file past the window would lose its end unseen: named, not cut (unlike a stage's
    # evaluation set, whose cache cuts it and counts it)
    cuts, _ = fit_window(cuts, model.encoder.window_seconds, "the inputs", "skip" if skip_bad else "error")
    dataset = AudioTextDataset(model.tokenizer, model.encoder)
    rows = []
    for batch_cuts in tqdm(list(batches_of(cuts, batch_size)), desc="transcribe", unit="batch"):
        batch = dataset[batch_cuts]
        hyps = model.transcribe_batch(batch, cfg.runtime, cfg.decode, num_beams)
        for cut, hyp in zip(batch_cuts, hyps):
            rows.append({"id": cut.id, "hyp": hyp, **({"ref": cut_text(cut)} if cut.supervisions else {})})
    return rows


def write_results(rows: list[dict[str, str]], path: str | Path) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


EXPORT_MARKER = "slam-export.json"  # in every export: what export may replace


def check_export_target(out: Path, assets: Path) -> None:
    """Refuse an ``out`` that export would have to delete and did not create: anything but a
    missing path, an empty directory or an earlier export (it holds :data:`EXPORT_MARKER`),
    and never the working directory, a repository or a folder holding the model itself."""
    if out.is_symlink():
        raise FileExistsError(f"{out} is a symbolic link; give a new or empty directory")
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; give a new or empty directory")
    target = out.resolve()
    for inside, what in ((Path.cwd().resolve(), "the working directory"), (assets.resolve(), "the model")):
        if inside == target or target in inside.parents:
            raise FileExistsError(f"{out} is or holds {what}; give a new or empty directory")
    if (out / ".git").exists():
        raise FileExistsError(f"{out} is a git repository; give a new or empty directory")
    if any(out.iterdir()) and not (out / EXPORT_MARKER).is_file():
        raise FileExistsError(f"{out} is not empty and is not an earlier slam export "
                              f"(no {EXPORT_MARKER}); give a new or empty directory")  # fmt: skip


def export_merged(model: str | Path, out: str | Path, trust_remote_code: bool = False) -> Path:
    """A standalone copy: LoRA merged into the LLM (``llm/``), projector, encoder weights.

    ``out`` must be new, empty or an earlier export (see :func:`check_export_target`); it is
    replaced only once the whole export is written beside it."""
    assets, out = resolve_model(model), Path(out)
    check_export_target(out, assets)  # before minutes of loading
    cfg, speech_llm = load_trained(assets, device="cpu", trust_remote_code=trust_remote_code)
    llm = speech_llm.llm
    if isinstance(llm, PeftModel):
        if speech_llm.prefix_length:
            raise ValueError("prefix tuning adds virtual tokens that cannot be merged into weights; "
                             f"load {assets} with its adapter instead")
        llm = llm.merge_and_unload()
    check_export_target(out, assets)  # again: something may have appeared there meanwhile
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
        (tmp / EXPORT_MARKER).write_text(json.dumps({"exported_from": str(assets)}) + "\n")
    log.info("exported %s to %s", assets, out)
    return out
