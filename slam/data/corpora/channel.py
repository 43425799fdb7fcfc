"""Telephone channel for a share of the training speech (lhotse's narrowband effect).

The synthetic corpus is clean 16 kHz speech; real prompts (asterisk_en) are 8 kHz telephone
recordings. Sending a seeded share of the training cuts through 8 kHz + mu-law and back
(lhotse ``Cut.narrowband``, a lazy transform: the cache stage renders it when it reads the
audio) shows the model that channel without growing the corpus.
"""

from __future__ import annotations

import hashlib

from lhotse import CutSet

NARROWBAND_CODEC = "mulaw"


def drawn(cut_id: str, seed: int, fraction: float) -> bool:
    """A draw by a hash of the cut id: the same cuts whatever the order or the machine."""
    digest = hashlib.sha256(f"{seed}:{cut_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def telephone_share(cuts: CutSet, fraction: float, seed: int) -> tuple[CutSet, int]:
    """The cuts with a seeded ``fraction`` of them narrowband (8 kHz, mu-law, back to their
    rate; ids keep their own), and how many were changed."""
    if fraction <= 0:
        return cuts, 0
    out, changed = [], 0
    for cut in cuts:
        if drawn(cut.id, seed, fraction):
            cut = cut.narrowband(NARROWBAND_CODEC, affix_id=False)
            changed += 1
        out.append(cut)
    return CutSet.from_cuts(out), changed
