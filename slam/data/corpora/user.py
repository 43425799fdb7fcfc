"""A user's own corpus, by set name in ``corpus.user_manifests``. Accepted forms of a path:

* a Lhotse CutSet manifest (``cuts.jsonl.gz``, any format ``lhotse.load_manifest`` reads);
* a RecordingSet + SupervisionSet pair: ``recordings.jsonl.gz,supervisions.jsonl.gz``
  (either order), or a directory holding exactly one ``*recordings*`` and one
  ``*supervisions*`` manifest (Lhotse recipes' naming);
* SLAM-LLM-style jsonl, one ``{"key": ..., "source": <audio path>, "target": <text>}`` per
  line (optional ``"speaker"``); relative audio paths are tried against the working directory,
  then against the jsonl's directory.

Everything goes through :func:`slam.data.corpora.validate.validate_cuts`, so a broken entry
raises :class:`BadInputError` naming the file and line (or is skipped and counted). jsonl
manifests (both forms) are read line by line, so that a line that is not UTF-8, not JSON or
not a manifest entry is named too, and with ``skip_bad`` costs that line only; a gzip file cut
short keeps the lines before the cut.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest
from lhotse.cut import Cut
from lhotse.serialization import deserialize_item
from lhotse.utils import fastcopy
from tqdm import tqdm

from slam.config import CorpusConfig
from slam.data.corpora.base import CORPORA, CorpusBuild
from slam.data.corpora.validate import BadInputError, short_error, validate_cuts

log = logging.getLogger(__name__)


def _open_bytes(path: Path) -> Any:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


class _Reader:
    """Reads one manifest line by line; collects skips (``skip_bad``) and cut origins."""

    def __init__(self, path: Path, skip_bad: bool) -> None:
        self.path, self.skip_bad = path, skip_bad
        self.skipped: Counter[str] = Counter()
        self.origins: dict[str, str] = {}

    def bad(self, reason: str, message: str) -> None:
        if not self.skip_bad:
            raise BadInputError(message + "; set corpus.skip_bad=true to skip such lines")
        log.warning("skipping: %s", message)
        self.skipped[reason] += 1

    def lines(self) -> Iterator[tuple[str, str]]:
        """``(file:line, text)`` of each non-blank line that decodes as UTF-8."""
        number = 0
        try:
            with _open_bytes(self.path) as f:
                for number, raw in enumerate(f, 1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        self.bad("bad_line", f"{self.path}:{number}: not UTF-8 text ({exc.reason} at byte "
                                 f"{exc.start})")  # fmt: skip
                        continue
                    if line.strip():
                        yield f"{self.path}:{number}", line
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # a gzip file cut short or corrupt
            self.bad("bad_line", f"{self.path}:{number + 1}: compressed file is cut short or corrupt ({exc})")
        except OSError as exc:
            raise BadInputError(f"{self.path}: cannot read ({exc.strerror or exc})") from None

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(file:line, object)`` of each line that is a JSON object."""
        for where, line in self.lines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                self.bad("bad_line", f"{where}: invalid JSON ({exc})")
                continue
            if not isinstance(record, dict):
                self.bad("bad_line", f"{where}: expected a JSON object, got {type(record).__name__}")
                continue
            yield where, record


def is_slam_jsonl(path: Path) -> bool:
    """Whether ``path`` is SLAM-LLM's ``{key, source, target}`` jsonl: its first JSON object
    with a ``source`` or ``target`` (SLAM) or an ``id`` (every Lhotse entry) has one of the
    first two. Lines that are not JSON objects or have none of these keys are bad lines of
    either form: they must not decide it (a broken first line would cost the whole file)."""
    if path.is_dir() or not path.name.endswith((".jsonl", ".jsonl.gz", ".json")):
        return False
    try:
        with _open_bytes(path) as f:
            for raw in f:
                # undecodable bytes elsewhere in the line must not hide the form of the file
                line = raw.decode("utf-8", errors="replace")
                try:
                    record = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and ({"source", "target", "id"} & record.keys()):
                    return "source" in record or "target" in record
    except (OSError, EOFError, zlib.error):
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
    reader = _Reader(path, skip_bad)
    cuts = []
    for where, record in tqdm(reader.records(), desc=f"import {path.name}", unit="line", leave=False):
        if not record.get("source"):
            reader.bad("bad_line", f"{where}: no 'source' audio path")
            continue
        audio = _resolve_audio(str(record["source"]), path)
        target = record.get("target")
        if not isinstance(target, str) or not target.strip():
            what = "is missing or blank" if target is None or isinstance(target, str) else "is not a string"
            reader.bad("no_text", f"{audio}: transcript ('target') {what} ({where})")
            continue
        key = str(record.get("key") or f"{path.stem}-{where.rsplit(':', 1)[1]}")
        if key in reader.origins:
            # even with skip_bad: which of the two is right is not ours to guess
            raise BadInputError(f"duplicate key {key!r} at {where} (first at {reader.origins[key]})")
        if not audio.is_file():
            reader.bad("missing_audio", f"{audio}: audio file does not exist (key {key}, {where})")
            continue
        try:
            recording = Recording.from_file(audio, recording_id=key)
        except Exception as exc:  # lhotse tries every backend; any failure means unreadable
            reader.bad("bad_audio", f"{audio}: cannot read audio: {short_error(exc)} (key {key}, {where})")
            continue
        reader.origins[key] = where
        # every channel: the transcript is the whole file's (validation downmixes on load)
        cut = recording.to_cut()
        channel = cut.channel
        supervision = SupervisionSegment(
            id=key, recording_id=key, start=0.0, duration=recording.duration, channel=channel,
            text=target.strip(), speaker=record.get("speaker"), language=record.get("language"),
        )  # fmt: skip
        cuts.append(fastcopy(cut, supervisions=[supervision]))
    return CutSet.from_cuts(cuts), dict(reader.skipped), reader.origins


def read_lhotse_jsonl(path: Path, skip_bad: bool = False) -> tuple[list[Any], dict[str, int], dict[str, str]]:
    """The items of a Lhotse jsonl manifest (cuts, recordings or supervisions, one kind);
    also skip counts and each item's ``file:line``."""
    reader = _Reader(path, skip_bad)
    items: list[Any] = []
    kind: type | None = None
    for where, record in reader.records():
        try:
            item = deserialize_item(record)
        except Exception as exc:  # from_dict raises whatever a missing or odd field causes
            reader.bad("bad_line", f"{where}: not a Lhotse manifest entry ({type(exc).__name__}: "
                       f"{short_error(exc)})")  # fmt: skip
            continue
        item_kind = next((k for k in (Cut, Recording, SupervisionSegment) if isinstance(item, k)), type(item))
        if kind is None:
            kind = item_kind
        elif item_kind is not kind:
            reader.bad("bad_line", f"{where}: a {item_kind.__name__} among {kind.__name__} entries")
            continue
        if item.id in reader.origins:  # even with skip_bad, as in SLAM jsonl
            raise BadInputError(f"duplicate id {item.id!r} at {where} (first at {reader.origins[item.id]})")
        reader.origins[item.id] = where
        items.append(item)
    return items, dict(reader.skipped), reader.origins


def _load(path: Path, skip_bad: bool, skipped: Counter[str], origins: dict[str, str]) -> Any:
    """A Lhotse manifest: jsonl line by line (see :func:`read_lhotse_jsonl`), else as Lhotse
    reads it (``.json``, ``.yaml``, ...)."""
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        items, line_skips, item_origins = read_lhotse_jsonl(path, skip_bad)
        skipped.update(line_skips)
        origins.update(item_origins)
        if not items:
            raise BadInputError(f"{path}: no manifest entries")
        if isinstance(items[0], Cut):
            return CutSet.from_cuts(items)
        if isinstance(items[0], Recording):
            return RecordingSet.from_recordings(items)
        if isinstance(items[0], SupervisionSegment):
            return SupervisionSet.from_segments(items)
        raise BadInputError(f"{path}: holds {type(items[0]).__name__} entries, not cuts or recordings")
    try:
        return load_manifest(path)
    except Exception as exc:
        raise BadInputError(f"{path}: not a readable Lhotse manifest ({type(exc).__name__}: "
                            f"{short_error(exc)})") from None  # fmt: skip


def _pair(paths: list[Path], skip_bad: bool, skipped: Counter[str], origins: dict[str, str]) -> CutSet:
    manifests = [_load(p, skip_bad, skipped, origins) for p in paths]
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
    """Cuts from any accepted form (see the module doc), before validation; also what the
    import skipped and where each cut came from (``file:line``)."""
    parts = [Path(p.strip()) for p in spec.split(",") if p.strip()]
    if not parts:
        raise BadInputError(f"user manifest {spec!r} names no file")
    for part in parts:
        if not part.exists():
            raise BadInputError(f"user manifest {part} does not exist")
    skipped: Counter[str] = Counter()
    origins: dict[str, str] = {}
    if len(parts) > 1:
        return _one_supervision_per_cut(_pair(parts, skip_bad, skipped, origins)), dict(skipped), origins
    path = parts[0]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.name.endswith((".jsonl.gz", ".jsonl", ".json")))
        recs = [p for p in found if "recordings" in p.name]
        sups = [p for p in found if "supervisions" in p.name]
        if len(recs) != 1 or len(sups) != 1:
            raise BadInputError(f"{path}: need exactly one *recordings* and one *supervisions* manifest")
        cuts = _pair([recs[0], sups[0]], skip_bad, skipped, origins)
        return _one_supervision_per_cut(cuts), dict(skipped), origins
    if is_slam_jsonl(path):
        return read_slam_jsonl(path, skip_bad)
    manifest = _load(path, skip_bad, skipped, origins)
    if not isinstance(manifest, CutSet):
        raise BadInputError(
            f"{path} is a {type(manifest).__name__}; give a CutSet, "
            "a 'recordings,supervisions' pair or SLAM-LLM jsonl"
        )
    return _one_supervision_per_cut(manifest), dict(skipped), origins


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
