"""Corpora behind the ``prepare`` stage: Lhotse CutSets for training and evaluation.

``prepare_corpus`` writes into ``corpus.dir``:

* ``audio/synth/*.wav``: what ``corpus.source`` synthesises: speech (16 kHz mono, silence
  trimmed, :mod:`.tts`), speech over parallel text with its translations (:mod:`.parallel`),
  sound scenes with several captions per clip (:mod:`.scenes`) or music (:mod:`.music`);
  source ``asterisk`` takes one language's real prompts instead, split by text, and pads
  their training part with synthetic speech (:mod:`.asterisk`);
* ``train|dev|test.jsonl.gz``: the synthetic sets, split by a hash of the sentence;
* ``<name>.jsonl.gz`` for every real set in ``corpus.real_sets`` (``CORPORA`` builders, e.g.
  ``asterisk_en``) and every ``corpus.user_manifests`` entry (a user set named ``train``,
  ``dev`` or ``test`` replaces that synthetic set);
* ``stats.json``: per set cuts, hours, distinct sentences and speakers, skipped counts. The
  same counts and the synthesis throughput go to an MLflow run of their own (system
  ``prepare``, metrics ``<set>.cuts``, ``<set>.skipped``, ``<set>.skipped.<reason>``,
  ``synthesis.wall_seconds``, ...). Every file here is the same, byte for byte, when the
  stage reruns on the same inputs.

Every cut is at ``corpus.sample_rate`` (other rates are resampled lazily by Lhotse on load),
mono or downmixed to mono on load, and has one supervision with ``text`` and ``speaker``.
"""

from __future__ import annotations

import gzip
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import mlflow
from lhotse import CutSet

from slam.config import ConfigError, SlamConfig
from slam.data.corpora import asterisk as _asterisk  # noqa: F401  (registers asterisk_<lang>, the asterisk source)
from slam.data.corpora import codeswitch as _codeswitch  # noqa: F401  (registers the codeswitch source)
from slam.data.corpora import folk as _folk  # noqa: F401  (registers the folk source, folk_oneills)
from slam.data.corpora import music as _music  # noqa: F401  (registers the music source, music_timgm)
from slam.data.corpora import parallel as _parallel  # noqa: F401  (registers the parallel source)
from slam.data.corpora import scenes as _scenes  # noqa: F401  (registers the scenes source)
from slam.data.corpora import styles as _styles  # noqa: F401  (registers the styles source)
from slam.data.corpora import tts as _tts  # noqa: F401  (registers the tts source)
from slam.data.corpora import tuxpaint as _tuxpaint  # noqa: F401  (registers tuxpaint)
from slam.data.corpora import user as _user  # noqa: F401  (registers user_manifest)
from slam.data.corpora.base import CORPORA, REAL_SOURCES, SYNTHESIZERS, CorpusBuild
from slam.data.corpora.channel import speed_share, telephone_share
from slam.data.corpora.text import SPLITS, held_out_split, sentence_key
from slam.data.corpora.validate import BadInputError, validate_cuts
from slam.track.tracking import start_run
from slam.utils import atomic_path, atomic_write_json

log = logging.getLogger(__name__)
# the synthesis summary's facts of this run, not of the corpus (MLflow only, see prepare_corpus)
RUN_FACTS = ("wall_seconds", "utterances_per_second", "realtime_factor", "workers")
SET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

__all__ = ["CORPORA", "BadInputError", "CorpusBuild", "cut_stats", "prepare_corpus", "write_manifest"]


def write_manifest(cuts: CutSet, path: Path) -> None:
    """Write ``cuts`` atomically (a reader never sees a half-written manifest) and byte for
    byte the same for the same cuts: Lhotse writes the JSON lines, the gzip layer here has no
    time stamp (``gzip.open``, which Lhotse's ``to_file`` uses, stores the write time, so every
    rerun of a stage changed its DVC digest and everything downstream looked changed)."""
    with atomic_path(path) as tmp:
        plain = tmp.with_name(f"{tmp.name}.jsonl")  # Lhotse's JSON lines, gzipped below
        try:
            cuts.to_jsonl(plain)
            with plain.open("rb") as src, tmp.open("wb") as raw:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
                    shutil.copyfileobj(src, packed)
        finally:
            plain.unlink(missing_ok=True)


def cut_stats(cuts: CutSet) -> dict[str, Any]:
    """Size and variety of one set: cuts, hours, mean duration, distinct sentences and speakers."""
    durations = [c.duration for c in cuts]
    sups = [c.supervisions[0] for c in cuts if c.supervisions]
    engines: dict[str, int] = {}
    for s in sups:
        engine = (s.custom or {}).get("engine")
        if engine:
            engines[engine] = engines.get(engine, 0) + 1
    stats = {
        "cuts": len(durations),
        "hours": round(sum(durations) / 3600, 4),
        "mean_duration": round(sum(durations) / max(len(durations), 1), 3),
        "sentences": len({s.text for s in sups}),
        "speakers": len({s.speaker for s in sups if s.speaker}),
    }
    if engines:
        stats["engines"] = dict(sorted(engines.items()))
    return stats


def prepare_corpus(cfg: SlamConfig) -> dict[str, CutSet]:
    """Build every set the config asks for, write manifests and ``stats.json``; return the sets."""
    c = cfg.corpus
    check_set_names(cfg)
    out = Path(c.dir)
    out.mkdir(parents=True, exist_ok=True)
    sets: dict[str, CutSet] = {}
    set_stats: dict[str, dict[str, Any]] = {}
    stats: dict[str, Any] = {"sample_rate": c.sample_rate, "sets": set_stats}

    # a real source's splits are built even without synthetic utterances to pad them with
    synthesised = c.num_utterances > 0 or c.source in REAL_SOURCES
    synth_splits = [s for s in SPLITS if s not in c.user_manifests] if synthesised else []
    if synth_splits:
        synth, summary = SYNTHESIZERS.build(c.source, c, out / "audio" / "synth", synth_splits)
        stats["synthesis"] = summary
        failed = summary["failed_by_split"]
        for split, cuts in synth.items():
            cuts, counts = validate_cuts(cuts, c.sample_rate, c.skip_bad)
            if failed.get(split):
                counts["skipped"]["render_failed"] = failed[split]
            if split == "train" and c.telephone_fraction > 0:
                cuts, counts["telephone_channel"] = telephone_share(cuts, c.telephone_fraction, c.seed)
            if split == "train" and c.speed_fraction > 0:
                cuts, counts["speed_perturbed"] = speed_share(cuts, c.speed_fraction, c.speed_factors, c.seed)
            sets[split] = cuts
            set_stats[split] = {**counts, "source": c.source}
    for name in c.real_sets:
        sets[name], set_stats[name] = CORPORA.build(name, c)
        if c.real_dev_fraction > 0:
            sets[name], sets[f"{name}_dev"] = hold_out_dev(sets[name], c.real_dev_fraction)
            set_stats[f"{name}_dev"] = {"held_out_of": name, "fraction": c.real_dev_fraction}
    if "train" in sets and c.real_sets:
        real = [cuts for name, cuts in sets.items() if name not in SPLITS]
        sets["train"], dropped = without_texts(sets["train"], real)
        if dropped:  # counted only when it happens, so a corpus without any stays as it was
            log.warning("train: %d cuts dropped that say a real set's prompt", dropped)
            set_stats["train"]["real_prompt_texts_dropped"] = dropped
    for name, path in c.user_manifests.items():
        sets[name], set_stats[name] = CORPORA.build("user_manifest", c, path)
        if not len(sets[name]):  # an empty set would fail the next stage, far from its cause
            why = skip_summary(set_stats[name])
            raise BadInputError(f"user set {name!r} ({path}) has no usable cuts: {why}")

    for name, cuts in sets.items():
        write_manifest(cuts, out / f"{name}.jsonl.gz")
        set_stats[name].update(cut_stats(cuts))
        s = set_stats[name]
        log.info(
            "%s: %d cuts, %.2f h, %d sentences, %d speakers, skipped %s",
            name, s["cuts"], s["hours"], s["sentences"], s["speakers"], s.get("skipped") or "none",
        )  # fmt: skip
    # stats.json says what the corpus is, the same on every rerun; how fast this run made it
    # goes to its MLflow run only (a time in the corpus dir would change its DVC digest)
    synthesis = stats.get("synthesis", {})
    run_facts = {k: synthesis.pop(k) for k in RUN_FACTS if k in synthesis}
    with start_run(cfg, "prepare"):
        mlflow.log_metrics({**prepare_metrics(stats), **{f"synthesis.{k}": v for k, v in run_facts.items()}})
        mlflow.log_dict(stats, "stats.json")
    log.info("synthesis: %s", run_facts or "nothing synthesised")
    atomic_write_json(out / "stats.json", stats)
    return sets


def without_texts(cuts: CutSet, held_out: list[CutSet]) -> tuple[CutSet, int]:
    """``cuts`` without those whose text is a ``held_out`` cut's (by :func:`sentence_key`:
    "Disabled." is a real prompt and a program's message), and how many went."""
    keys = {sentence_key(s.text) for held in held_out for cut in held for s in cut.supervisions}
    kept = [cut for cut in cuts if sentence_key(" ".join(s.text for s in cut.supervisions)) not in keys]
    return (cuts, 0) if len(kept) == len(cuts) else (CutSet.from_cuts(kept), len(cuts) - len(kept))


def hold_out_dev(cuts: CutSet, fraction: float) -> tuple[CutSet, CutSet]:
    """(test, dev) of a real set: about ``fraction`` of its prompt texts go to dev, by the
    same stable text hash that splits the synthetic sentences (no prompt in both)."""
    in_dev = {cut.id for cut in cuts if held_out_split(cut.supervisions[0].text, fraction) == "dev"}
    return cuts.filter(lambda cut: cut.id not in in_dev), cuts.filter(lambda cut: cut.id in in_dev)


def skip_summary(counts: dict[str, Any]) -> str:
    """``N lines or cuts skipped (reason: n, ...)`` from a set's counts, or that it had none."""
    skipped = counts.get("skipped") or {}
    if not skipped:
        return "the manifest holds no entries"
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
    return f"{sum(skipped.values())} lines or cuts skipped ({reasons}; corpus.skip_bad is on)"


def check_set_names(cfg: SlamConfig) -> None:
    """Set names become file names: plain ones only, and no set named twice."""
    c = cfg.corpus
    for name in [*c.real_sets, *c.user_manifests]:
        if not SET_NAME.fullmatch(str(name)):
            raise ConfigError(f"corpus set name {name!r}: use letters, digits, '_', '-' and '.' only")
    held_out = [f"{name}_dev" for name in c.real_sets] if c.real_dev_fraction > 0 else []
    clash = [name for name in [*c.real_sets, *held_out] if name in SPLITS or name in c.user_manifests]
    if clash:
        raise ConfigError(f"corpus.real_sets {clash} clash with the synthetic or user set names")


def prepare_metrics(stats: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of ``stats.json``: size, resampled/downmixed and skips of every set."""
    metrics: dict[str, float] = {}
    for name, s in stats["sets"].items():
        for key in ("cuts", "hours", "checked", "resampled", "downmixed", "one_channel"):
            if key in s:
                metrics[f"{name}.{key}"] = float(s[key])
        skipped = s.get("skipped") or {}
        metrics[f"{name}.skipped"] = float(sum(skipped.values()))
        for reason, count in skipped.items():
            metrics[f"{name}.skipped.{reason}"] = float(count)
    return metrics
