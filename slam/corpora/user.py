"""A user's own corpus, by set name in ``corpus.user_manifests``. Accepted forms of a path:

* a Lhotse CutSet manifest (``cuts.jsonl.gz``, any format ``lhotse.load_manifest`` reads);
* a RecordingSet + SupervisionSet pair: ``recordings.jsonl.gz,supervisions.jsonl.gz``
  (either order), or a directory holding exactly one ``*recordings*`` and one
  ``*supervisions*`` manifest (Lhotse recipes' naming);
* SLAM-LLM-style jsonl, one ``{"key": ..., "source": <audio path>, "target": <text>}`` per
  line (optional ``"speaker"``); relative audio paths are tried against the working directory,
  then against the jsonl's directory.

Everything goes through :func:`slam.corpora.validate.validate_cuts`, so a broken entry
raises :class:`BadInputError` naming the file and line (or is skipped and counted).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from lhotse import CutSet, MonoCut, Recording, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest
from tqdm import tqdm

from slam.config import CorpusConfig
from slam.corpora.base import CORPORA, CorpusBuild
from slam.corpora.validate import BadInputError, short_error, validate_cuts

log = logging.getLogger(__name__)


def _open_text(path: Path) -> Any:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def is_slam_jsonl(path: Path) -> bool:
    """Whether the first record of ``path`` looks like SLAM-LLM's ``{key, source, target}``."""
    if path.is_dir() or not path.name.endswith((".jsonl", ".jsonl.gz", ".json")):
        return False
    try:
        with _open_text(path) as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    return isinstance(record, dict) and "source" in record and "target" in record
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return False


def _resolve_audio(source: str, manifest: Path) -> Path:
    path = Path(source)
    if path.is_absolute() or path.exists():
        return path
    beside = manifest.parent / path
    return beside if beside.exists() else path


def read_slam_jsonl(path: Path, skip_bad: bool = False) -> tuple[CutSet, dict[str, int], dict[str, str]]:
    """Cuts from SLAM-LLM jsonl; also skip counts and each cut's ``file:line`` for messages."""
    cuts = []
    skipped: Counter[str] = Counter()
    origins: dict[str, str] = {}

    def bad(reason: str, message: str) -> None:
        if not skip_bad:
            raise BadInputError(message + "; set corpus.skip_bad=true to skip such lines")
        log.warning("skipping: %s", message)
        skipped[reason] += 1

    with _open_text(path) as f:
        lines = f.readlines()
    for number, line in enumerate(tqdm(lines, desc=f"import {path.name}", unit="line", leave=False), 1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad("bad_line", f"{where}: invalid JSON ({exc})")
            continue
        if not isinstance(record, dict) or not record.get("source"):
            bad("bad_line", f"{where}: no 'source' audio path")
            continue
        audio = _resolve_audio(str(record["source"]), path)
        target = record.get("target")
        if not isinstance(target, str) or not target.strip():
            bad("no_text", f"{audio}: transcript ('target') is missing or blank ({where})")
            continue
        key = str(record.get("key") or f"{path.stem}-{number}")
        if key in origins:
            raise BadInputError(f"duplicate key {key!r} at {where} (first at {origins[key]})")
        if not audio.is_file():
            bad("missing_audio", f"{audio}: audio file does not exist (key {key}, {where})")
            continue
        try:
            recording = Recording.from_file(audio, recording_id=key)
        except Exception as exc:  # lhotse tries every backend; any failure means unreadable
            bad("bad_audio", f"{audio}: cannot read audio: {short_error(exc)} (key {key}, {where})")
            continue
        origins[key] = where
        supervision = SupervisionSegment(
            id=key, recording_id=key, start=0.0, duration=recording.duration, channel=0,
            text=target.strip(), speaker=record.get("speaker"), language=record.get("language"),
        )  # fmt: skip
        cuts.append(
            MonoCut(
                id=key,
                start=0.0,
                duration=recording.duration,
                channel=0,
                recording=recording,
                supervisions=[supervision],
            )
        )
    return CutSet.from_cuts(cuts), dict(skipped), origins


def _load(path: Path) -> Any:
    try:
        return load_manifest(path)
    except Exception as exc:
        raise BadInputError(f"{path}: not a readable Lhotse manifest ({type(exc).__name__}: {exc})") from None


def _pair(paths: list[Path]) -> CutSet:
    manifests = [_load(p) for p in paths]
    recordings = [m for m in manifests if isinstance(m, RecordingSet)]
    supervisions = [m for m in manifests if isinstance(m, SupervisionSet)]
    if len(recordings) != 1 or len(supervisions) != 1:
        names = ", ".join(str(p) for p in paths)
        raise BadInputError(f"expected one RecordingSet and one SupervisionSet, got {names}")
    return CutSet.from_manifests(recordings=recordings[0], supervisions=supervisions[0])


def _one_supervision_per_cut(cuts: CutSet) -> CutSet:
    """Long recordings with several segments become one cut per segment."""
    out = []
    split = 0
    for cut in cuts:
        if len(cut.supervisions) > 1:
            out.extend(CutSet.from_cuts([cut]).trim_to_supervisions(keep_overlapping=False))
            split += 1
        else:
            out.append(cut)
    if split:
        log.info("%d cuts with several supervisions split into one cut per supervision", split)
    return CutSet.from_cuts(out)


def read_user_corpus(spec: str, skip_bad: bool = False) -> tuple[CutSet, dict[str, int], dict[str, str]]:
    """Cuts from any accepted form (see the module doc), before validation."""
    parts = [Path(p.strip()) for p in spec.split(",") if p.strip()]
    for part in parts:
        if not part.exists():
            raise BadInputError(f"user manifest {part} does not exist")
    if len(parts) > 1:
        return _one_supervision_per_cut(_pair(parts)), {}, {}
    path = parts[0]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.name.endswith((".jsonl.gz", ".jsonl", ".json")))
        recs = [p for p in found if "recordings" in p.name]
        sups = [p for p in found if "supervisions" in p.name]
        if len(recs) != 1 or len(sups) != 1:
            raise BadInputError(f"{path}: need exactly one *recordings* and one *supervisions* manifest")
        return _one_supervision_per_cut(_pair([recs[0], sups[0]])), {}, {}
    if is_slam_jsonl(path):
        return read_slam_jsonl(path, skip_bad)
    manifest = _load(path)
    if not isinstance(manifest, CutSet):
        raise BadInputError(
            f"{path} is a {type(manifest).__name__}; give a CutSet, "
            "a 'recordings,supervisions' pair or SLAM-LLM jsonl"
        )
    return _one_supervision_per_cut(manifest), {}, {}


def load_user_corpus(spec: str, sample_rate: int, skip_bad: bool = False) -> tuple[CutSet, dict[str, Any]]:
    """Import and validate a user's corpus; counts include what import and validation skipped."""
    cuts, import_skipped, origins = read_user_corpus(spec, skip_bad)
    cuts, counts = validate_cuts(cuts, sample_rate, skip_bad, origins)
    skipped = Counter(import_skipped)
    skipped.update(counts["skipped"])
    counts["skipped"] = dict(skipped)
    counts["source"] = spec
    return cuts, counts


@CORPORA.register("user_manifest")
def user_manifest(cfg: CorpusConfig, path: str) -> CorpusBuild:
    """The registered importer behind every ``corpus.user_manifests`` entry."""
    return load_user_corpus(path, cfg.sample_rate, cfg.skip_bad)
