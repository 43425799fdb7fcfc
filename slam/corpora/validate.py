"""Checks every cut before it reaches training: audio decodes, transcript exists.

A broken file found here costs a line in a log; found in the middle of training it costs the
run. So each cut's audio is decoded once, and any problem either raises
:class:`BadInputError` naming the file (and cut id, and the manifest line when known) or,
with ``skip_bad``, is logged and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.utils import fastcopy
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


def _problem(cut: Cut) -> tuple[str, str] | None:
    """(reason, message) for the first thing wrong with ``cut``, or ``None``."""
    recording = getattr(cut, "recording", None)
    if recording is None:
        return "no_audio", "no recording"
    for src in recording.sources:
        if src.type == "file" and not Path(str(src.source)).is_file():
            return "missing_audio", "audio file does not exist"
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
    return None


def validate_cuts(
    cuts: CutSet,
    sample_rate: int,
    skip_bad: bool = False,
    origins: Mapping[str, str] | None = None,
) -> tuple[CutSet, dict[str, Any]]:
    """Check and normalise ``cuts``: decodable finite non-empty audio, one non-blank transcript.

    Cuts at another sample rate are resampled lazily (Lhotse resamples on load) and
    multi-channel cuts keep their first channel. ``origins`` maps cut ids to where they came
    from (``file:line``) for error messages. Duplicate ids always raise: they would silently
    overwrite each other downstream. Returns the kept cuts and counts (``checked``, ``kept``,
    ``resampled``, ``first_channel`` and ``skipped`` by reason).
    """
    origins = origins or {}
    seen: set[str] = set()
    kept = []
    skipped: Counter[str] = Counter()
    resampled: Counter[int] = Counter()
    first_channel = 0
    checked = 0
    for cut in tqdm(cuts, desc="validate", unit="cut", leave=False):
        checked += 1
        where = f"cut {cut.id}" + (f", {origins[cut.id]}" if cut.id in origins else "")
        if cut.id in seen:
            raise BadInputError(f"duplicate cut id {cut.id!r} ({where}, audio {audio_path(cut)})")
        seen.add(cut.id)
        problem = _problem(cut)
        if problem is not None:
            reason, message = problem
            full = f"{audio_path(cut)}: {message} ({where})"
            if not skip_bad:
                raise BadInputError(full + "; set corpus.skip_bad=true to skip such cuts")
            log.warning("skipping: %s", full)
            skipped[reason] += 1
            continue
        if cut.num_channels > 1:
            channel = cut.channel[0] if isinstance(cut.channel, list) else cut.channel
            sups = [fastcopy(s, channel=channel) for s in cut.supervisions]
            cut = fastcopy(cut, channel=channel, supervisions=sups)
            first_channel += 1
        if cut.sampling_rate != sample_rate:
            resampled[cut.sampling_rate] += 1
            cut = cut.resample(sample_rate)
        kept.append(cut)
    for rate, n in sorted(resampled.items()):
        log.info("%d cuts at %d Hz resampled to %d Hz (lazily, on load)", n, rate, sample_rate)
    if first_channel:
        log.info("%d multi-channel cuts reduced to their first channel", first_channel)
    if skipped:
        log.warning("skipped %d of %d cuts: %s", sum(skipped.values()), checked, dict(skipped))
    counts = {
        "checked": checked,
        "kept": len(kept),
        "resampled": sum(resampled.values()),
        "first_channel": first_channel,
        "skipped": dict(skipped),
    }
    return CutSet.from_cuts(kept), counts
