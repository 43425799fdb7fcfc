"""The corpus registry, kept apart from ``__init__`` so builder modules can import it.

A builder takes the ``CorpusConfig`` (plus builder-specific keyword arguments) and returns
the validated cuts of one set and its counts for ``stats.json``.
"""

from __future__ import annotations

from typing import Any

from lhotse import CutSet

from slam.registry import Registry

CorpusBuild = tuple[CutSet, dict[str, Any]]

CORPORA: Registry[CorpusBuild] = Registry("corpus")

# What ``corpus.source`` synthesises: ``(cfg, audio_dir, splits) -> (cuts per split, summary)``
SynthesisBuild = tuple[dict[str, CutSet], dict[str, Any]]
SYNTHESIZERS: Registry[SynthesisBuild] = Registry("corpus source")
# sources whose splits are real recordings (``corpus.num_utterances`` only pads them with
# synthetic ones): built even when it is 0
REAL_SOURCES: set[str] = set()
