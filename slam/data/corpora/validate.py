"""Checks every cut before it reaches training: audio decodes, transcript exists.

A broken file found here costs a line in a log; found in the middle of training it costs the
run. So each cut's audio is decoded once, and any problem either raises
:class:`BadInputError` naming the file (and cut id, and the manifest line when known) or,
with ``skip_bad``, is logged and counted.

What counts as broken (the skip reason in brackets): a missing file [missing_audio], audio
that does not decode [bad_audio], a WAV shorter than its header says [truncated_audio], no
samples [empty_audio], only zeros [silent_audio: a transcript over digital silence teaches
the model to invent text], NaN or infinite samples [non_finite], no or a blank transcript
[no_text]. Not broken: another sample rate (resampled lazily on load) and several channels
(averaged to mono on load, unless the transcript belongs to one channel); long files are kept
(the corpus knows no encoder: the cache stage names a cut its encoder cannot take, or counts
it as truncated when the encoder cuts it short).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from lhotse import CutSet
from lhotse.cut import Cut, MonoCut
from lhotse.utils import fastcopy, to_list
from tqdm import tqdm

log = logging.getLogger(__name__)


class BadInputError(ValueError):
    """An input file or manifest entry is unusable; the message names it."""


def audio_path(cut: Cut) -> str:
    """The file behind a cut's recording (or a description for in-memory/url sources)."""
    recording = getattr(cut, "recording", None)
    if recording is None:
        return f"<cut {cut.id} has no recording>"
    return ", ".join(str(src.source) for src in recording.sources) if recording.sources else "<no source>"


def short_error(exc: BaseException) -> str:
    """One line for an audio loading error (lhotse lists every backend's failure)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and lines[0].endswith("Details:"):  # first backend's own reason
        return lines[1].rsplit(": ", 1)[-1][:200]
    return lines[0][:200]


def wav_truncation(path: Path) -> str | None:
    """What is missing from a RIFF WAV cut short (a failed copy or download), or ``None``.

    Decoders read such a file without complaint, only shorter: its transcript then covers
    audio that is not there. The header's ``data`` chunk size tells how long it should be.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None  # not a plain WAV (RF64, FLAC, ...): the decoder is the judge
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                chunk = f.read(8)
                length = int.from_bytes(chunk[4:8], "little")
                if chunk[:4] == b"data":
                    if length in (0, 0xFFFFFFFF):  # written as a stream: size unknown
                        return None
                    have = size - pos - 8
                    if have < length:
                        return f"truncated WAV: header declares {length} bytes of audio, file holds {have}"
                    return None
                pos += 8 + length + (length & 1)  # chunks are word-aligned
    except OSError:
        return None
    return None


def _problem(cut: Cut, require_text: bool = True) -> tuple[str, str] | None:
    """(reason, message) for the first thing wrong with ``cut``, or ``None``."""
    recording = getattr(cut, "recording", None)
    if recording is None:
        return "no_audio", "no recording"
    for src in recording.sources:
        if src.type == "file" and not Path(str(src.source)).is_file():
            return "missing_audio", "audio file does not exist"
        if src.type == "file" and (truncated := wav_truncation(Path(str(src.source)))):
            return "truncated_audio", truncated
    if require_text:
        if len(cut.supervisions) != 1:
            return "no_text", f"expected one supervision, found {len(cut.supervisions)}"
        text = cut.supervisions[0].text
        if text is None or not text.strip():
            return "no_text", "transcript is missing or blank"
    if cut.duration <= 0 or recording.num_samples == 0:
        return "empty_audio", "audio is empty (0 samples)"
    try:
        samples = cut.load_audio()
    except Exception as exc:  # every backend failure means the same: cannot decode
        return "bad_audio", f"cannot decode audio: {short_error(exc)}"
    if samples is None or samples.size == 0:
        return "empty_audio", "audio decodes to 0 samples"
    if not np.isfinite(samples).all():
        return "non_finite", "audio has NaN or infinite samples"
    if not np.any(samples):
        return "silent_audio", "audio is all zeros (digital silence)"
    return None


def _channels(cut: Cut) -> Cut:
    """A multi-channel cut keeps the channel its transcript is on, if it names one; otherwise
    every channel, which the encoders average to mono on load."""
    channel = cut.supervisions[0].channel if cut.supervisions else None
    if isinstance(channel, list) and len(channel) == 1:
        channel = channel[0]
    if not isinstance(channel, int) or channel not in to_list(cut.channel):
        return cut
    return MonoCut(
        id=cut.id, start=cut.start, duration=cut.duration, channel=channel, recording=cut.recording,
        supervisions=[fastcopy(s, channel=channel) for s in cut.supervisions], custom=cut.custom,
    )  # fmt: skip


def validate_cuts(
    cuts: CutSet,
    sample_rate: int,
    skip_bad: bool = False,
    origins: Mapping[str, str] | None = None,
    require_text: bool = True,
) -> tuple[CutSet, dict[str, Any]]:
    """Check and normalise ``cuts``: decodable finite non-empty audio, one non-blank transcript.

    Cuts at another sample rate are resampled lazily (Lhotse resamples on load);
    multi-channel cuts are downmixed on load (see :func:`_channels`). ``origins`` maps cut ids
    to where they came from (``file:line``) for error messages. Duplicate ids always raise:
    they would silently overwrite each other downstream. Returns the kept cuts and counts
    (``checked``, ``kept``, ``resampled``, ``downmixed``, ``one_channel`` and ``skipped`` by
    reason). ``require_text=False`` checks the audio only (inputs to transcribe).
    """
    origins = origins or {}
    seen: set[str] = set()
    kept = []
    skipped: Counter[str] = Counter()
    resampled: Counter[int] = Counter()
    downmixed = one_channel = 0
    checked = 0
    for cut in tqdm(cuts, desc="validate", unit="cut", leave=False):
        checked += 1
        where = f"cut {cut.id}" + (f", {origins[cut.id]}" if cut.id in origins else "")
        if cut.id in seen:
            raise BadInputError(f"duplicate cut id {cut.id!r} ({where}, audio {audio_path(cut)})")
        seen.add(cut.id)
        problem = _problem(cut, require_text)
        if problem is not None:
            reason, message = problem
            full = f"{audio_path(cut)}: {message} ({where})"
            if not skip_bad:
                raise BadInputError(full + "; set corpus.skip_bad=true to skip such cuts")
            log.warning("skipping: %s", full)
            skipped[reason] += 1
            continue
        if cut.num_channels > 1:
            cut = _channels(cut)
            if cut.num_channels > 1:
                downmixed += 1
            else:
                one_channel += 1
        if cut.sampling_rate != sample_rate:
            resampled[cut.sampling_rate] += 1
            cut = cut.resample(sample_rate)
        kept.append(cut)
    for rate, n in sorted(resampled.items()):
        log.info("%d cuts at %d Hz resampled to %d Hz (lazily, on load)", n, rate, sample_rate)
    if downmixed:
        log.info("%d multi-channel cuts will be averaged to mono on load", downmixed)
    if one_channel:
        log.info("%d multi-channel cuts reduced to the channel of their transcript", one_channel)
    if skipped:
        log.warning("skipped %d of %d cuts: %s", sum(skipped.values()), checked, dict(skipped))
    counts = {
        "checked": checked,
        "kept": len(kept),
        "resampled": sum(resampled.values()),
        "downmixed": downmixed,
        "one_channel": one_channel,
        "skipped": dict(skipped),
    }
    return CutSet.from_cuts(kept), counts
