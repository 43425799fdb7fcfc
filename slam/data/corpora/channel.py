"""Channel and speaker perturbations for a share of the training speech (lhotse's lazy effects).

The synthetic corpus is clean 16 kHz speech from a few dozen voices; real prompts (asterisk_en)
are one real speaker's 8 kHz telephone recordings. Both perturbations are lazy lhotse transforms
on a seeded share of the training cuts (the cache stage renders them when it reads the audio),
so they show the model more channels and speakers without growing the corpus:
- telephone: 8 kHz + mu-law and back (``Cut.narrowband``);
- speed: resampling by a factor (``Cut.perturb_speed``, Kaldi's speed perturbation), which
  shifts pitch and formants together, as a shorter or longer vocal tract would: new speakers
  from the same voices, which TTS's own rate control (durations only) does not give.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from lhotse import CutSet
from lhotse.cut import Cut

NARROWBAND_CODEC = "mulaw"


def drawn(cut_id: str, seed: int, fraction: float) -> bool:
    """A draw by a hash of the cut id: the same cuts whatever the order or the machine."""
    digest = hashlib.sha256(f"{seed}:{cut_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def perturb_share(
    cuts: CutSet, fraction: float, seed: int, perturb: Callable[[Cut], Cut]
) -> tuple[CutSet, int]:
    """The cuts with a seeded ``fraction`` of them through ``perturb``, and how many were changed."""
    if fraction <= 0:
        return cuts, 0
    out, changed = [], 0
    for cut in cuts:
        if drawn(cut.id, seed, fraction):
            cut = perturb(cut)
            changed += 1
        out.append(cut)
    return CutSet.from_cuts(out), changed


def telephone_share(cuts: CutSet, fraction: float, seed: int) -> tuple[CutSet, int]:
    """The cuts with a seeded ``fraction`` of them narrowband (8 kHz, mu-law, back to their
    rate; ids keep their own), and how many were changed."""
    return perturb_share(cuts, fraction, seed, lambda cut: cut.narrowband(NARROWBAND_CODEC, affix_id=False))


def speed_share(cuts: CutSet, fraction: float, factors: list[float], seed: int) -> tuple[CutSet, int]:
    """The cuts with a seeded ``fraction`` of them speed-perturbed, each by one of ``factors``
    drawn by a hash of its id (ids keep their own; supervisions are rescaled by lhotse), and how
    many were changed."""
    if not factors:
        return cuts, 0

    def resample(cut: Cut) -> Cut:
        digest = hashlib.sha256(f"speed:{seed}:{cut.id}".encode()).digest()
        return cut.perturb_speed(factors[int.from_bytes(digest[:8], "big") % len(factors)], affix_id=False)

    return perturb_share(cuts, fraction, seed + 1, resample)  # seed + 1: not the telephone share's cuts
