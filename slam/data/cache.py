"""Run the frozen encoder once over every cut and keep its outputs (Lhotse feature storage).

Training then reads ``[frames, dim]`` arrays instead of re-running the encoder every step.
``info.json`` records the encoder config and a key of its weights and settings: training
refuses a cache whose encoder differs from the configured one.

The stage is resumable, a set at a time: each finished set (its ``.h5`` and manifest, both
replaced atomically) is recorded in ``progress.json`` with the encoder key, the storage dtype
and a digest of the corpus manifest it came from. A rerun keeps the sets whose record still
matches and encodes the rest; ``info.json`` is written last, so a cache without it is
unfinished and nothing reads it. (Under DVC this needs ``persist: true`` on the output, or
DVC deletes it before the rerun.)
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from lhotse.features.io import NumpyHdf5Writer, close_cached_file_handles
from tqdm import tqdm

from slam.config import ConfigError, EncoderConfig, SlamConfig
from slam.data.corpora import write_manifest
from slam.data.corpora.validate import BadInputError, audio_path, short_error
from slam.data.cuts import ENCODER_OUT, load_cuts, manifest_path
from slam.model.encoders import AudioEncoder, build_encoder
from slam.model.encoders.base import pad_features
from slam.model.tuning import encoder_trains
from slam.utils import atomic_path, atomic_write_json, setup_runtime

log = logging.getLogger(__name__)
INFO = "info.json"
PROGRESS = "progress.json"


def corpus_sets(corpus_dir: str | Path) -> list[str]:
    """Names of the sets the prepare stage wrote (``<name>.jsonl.gz``)."""
    return sorted(p.name.removesuffix(".jsonl.gz") for p in Path(corpus_dir).glob("*.jsonl.gz"))


def checked_dev_set(cfg: SlamConfig, directory: str) -> str:
    """``train.dev_set``, once it is known to be one of the sets in ``directory``."""
    sets = corpus_sets(directory)
    if cfg.train.dev_set not in sets or cfg.train.dev_set == "train":
        raise ConfigError(f"train.dev_set {cfg.train.dev_set!r} is not a held-out set of {directory} "
                          f"(sets: {', '.join(s for s in sets if s != 'train')}); a real set's dev part "
                          "is <name>_dev with corpus.real_dev_fraction > 0")  # fmt: skip
    return cfg.train.dev_set


def manifest_digest(path: Path) -> str:
    """A digest of a manifest's content (decompressed: gzip headers carry a timestamp)."""
    digest = hashlib.sha256()
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@torch.no_grad()
def encode_set(
    encoder: AudioEncoder,
    cuts: CutSet,
    storage: Path,
    dtype: str,
    device: torch.device,
    desc: str,
    skip_bad: bool = False,
    problems: Counter[str] | None = None,
) -> CutSet:
    """Encode each cut at its true length; return the cuts with ``encoder_out`` attached.

    A cut whose audio the encoder cannot take (unreadable since prepare, longer than the
    encoder's limit) raises :class:`BadInputError` naming it, or with ``skip_bad`` is left
    out and counted in ``problems["encode_failed"]``. A cut whose outputs cover less than its
    audio (an encoder with a fixed window cuts long clips) is kept, logged and counted in
    ``problems["truncated"]``: its transcript then runs past what the model hears.
    """
    out = []
    # the temp name ends in .h5 as the writer wants; the file replaces ``storage`` when all is written
    with atomic_path(storage, ".h5") as tmp, NumpyHdf5Writer(tmp, mode="w") as writer:
        for cut in tqdm(cuts, desc=desc, unit="cut"):
            try:
                inputs = encoder.load_input(cut)
            except Exception as exc:  # the audio side only: errors of the network are bugs
                message = f"{audio_path(cut)}: cannot encode cut {cut.id} of set {desc}: {short_error(exc)}"
                if not skip_bad:
                    raise BadInputError(message + "; set corpus.skip_bad=true to skip such cuts") from None
                log.warning("skipping: %s", message)
                if problems is not None:
                    problems["encode_failed"] += 1
                continue
            feats, lengths = pad_features([inputs])
            hidden, hidden_len = encoder(feats.to(device), lengths.to(device))
            array = hidden[0, : hidden_len[0]].float().cpu().numpy().astype(np.dtype(dtype))
            covered = int(hidden_len[0]) / encoder.frame_rate if encoder.frame_rate else cut.duration
            if covered + 0.5 < cut.duration:  # 0.5 s: convolution edges, not truncation
                log.warning("%s: the encoder covers %.1f s of the %.1f s of cut %s of set %s",
                            audio_path(cut), covered, cut.duration, cut.id, desc)
                if problems is not None:
                    problems["truncated"] += 1
            manifest = writer.store_array(
                # a sequence-wise encoder gives one vector for the whole clip
                cut.id, array, frame_shift=1.0 / encoder.frame_rate if encoder.frame_rate else cut.duration,
                temporal_dim=0,
            )
            manifest.array.storage_path = storage.name  # relative to the cache dir, see below
            out.append(cut.with_custom(ENCODER_OUT, manifest))
    # Lhotse keeps HDF5 files open by path: a handle on the file just replaced would go on
    # reading the old one in this process.
    close_cached_file_handles()
    return CutSet.from_cuts(out)


def read_progress(cache_dir: Path, stamp: dict[str, Any]) -> dict[str, Any]:
    """The sets finished by an earlier run with this encoder ``stamp`` (else none)."""
    path = cache_dir / PROGRESS
    try:
        progress = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        progress = None
    if not isinstance(progress, dict) or progress.get("stamp") != stamp:
        return {"stamp": stamp, "sets": {}}
    return progress


def _finished(cache_dir: Path, name: str, record: dict[str, Any] | None, digest: str) -> bool:
    return (
        record is not None
        and record.get("corpus") == digest
        and (cache_dir / f"{name}.h5").is_file()
        and manifest_path(cache_dir, name).is_file()
    )


def build_cache(cfg: SlamConfig) -> dict:
    """The cache stage: every corpus set -> ``<cache.dir>/<set>.{h5,jsonl.gz}`` + info."""
    device = setup_runtime(cfg.runtime)
    cache_dir = Path(cfg.cache.dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Until this run ends the cache is unfinished: no info.json, so that nothing reads a mix
    # of an older run's sets and this one's.
    (cache_dir / INFO).unlink(missing_ok=True)
    if encoder_trains(cfg) and cfg.baseline.finetune_minutes <= 0:
        # The encoder trains, so its outputs change every step: nothing for training to cache
        # (the fine-tuned Whisper baseline still reads the frozen encoder's). The stage still
        # writes its info so that DVC has an output and the reason is on record.
        info = {"encoder": dataclasses.asdict(cfg.encoder), "skipped": "the encoder trains", "sets": {}}
        atomic_write_json(cache_dir / INFO, info)
        log.info("encoder fine-tuning is on (train.encoder_layers / layer weighting): no cache")
        return info
    encoder = build_encoder(cfg.encoder).to(device)
    stamp = {"encoder": dataclasses.asdict(cfg.encoder), "key": encoder.cache_key(), "dtype": cfg.cache.dtype}
    info: dict[str, Any] = {
        "encoder": stamp["encoder"],
        "key": stamp["key"],
        "dim": encoder.dim,
        "frame_rate": encoder.frame_rate,
        "dtype": cfg.cache.dtype,
        "sets": {},
    }
    names = corpus_sets(cfg.corpus.dir)
    progress = read_progress(cache_dir, stamp)
    for gone in [n for n in progress["sets"] if n not in names]:  # a set the corpus no longer has
        (cache_dir / f"{gone}.h5").unlink(missing_ok=True)
        manifest_path(cache_dir, gone).unlink(missing_ok=True)
        del progress["sets"][gone]
    # per set: cuts left out (encode_failed) and cuts kept truncated (truncated)
    problems_by_set: dict[str, dict[str, int]] = {}
    for name in names:
        digest = manifest_digest(manifest_path(cfg.corpus.dir, name))
        record = progress["sets"].get(name)
        if _finished(cache_dir, name, record, digest):
            assert record is not None
            log.info("%s: %d cuts cached by an earlier run with this encoder: kept", name, record["cuts"])
        else:
            problems: Counter[str] = Counter()
            cached = encode_set(encoder, load_cuts(cfg.corpus.dir, name), cache_dir / f"{name}.h5",
                                cfg.cache.dtype, device, name, cfg.corpus.skip_bad, problems)
            # Storage paths are kept relative so the cache dir can move (DVC checkout, exp temp
            # dirs); loaders resolve them against the cache dir.
            write_manifest(cached, manifest_path(cache_dir, name))
            record = {"corpus": digest, "cuts": len(cached), "problems": dict(problems)}
            progress["sets"][name] = record
            atomic_write_json(cache_dir / PROGRESS, progress)  # this set is done, whatever follows
            log.info("cached %d cuts of %s", len(cached), name)
        info["sets"][name] = record["cuts"]
        if record.get("problems"):
            problems_by_set[name] = record["problems"]
    if problems_by_set:
        info["cut_problems"] = problems_by_set
    atomic_write_json(cache_dir / PROGRESS, progress)
    atomic_write_json(cache_dir / INFO, info)
    return info


def load_cached_cuts(cfg: SlamConfig, name: str) -> CutSet:
    """Cached cuts of one set, checked against the configured encoder."""
    cache_dir = Path(cfg.cache.dir)
    info_path = cache_dir / INFO
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path} missing: run the cache stage first")
    info = json.loads(info_path.read_text())
    # A cache written before a setting existed was built with that setting's default.
    built_with = {**dataclasses.asdict(EncoderConfig()), **info["encoder"]}
    if built_with != dataclasses.asdict(cfg.encoder):
        raise ValueError(
            f"the cache in {cache_dir} was built for encoder {info['encoder']}, "
            f"but the config asks for {dataclasses.asdict(cfg.encoder)}: rerun the cache stage"
        )
    root = str(cache_dir.resolve())

    def resolve(cut):  # make the relative storage path absolute for this checkout
        arr = cut.custom[ENCODER_OUT].array
        if not Path(arr.storage_path).is_absolute():
            arr.storage_path = str(Path(root) / arr.storage_path)
        return cut

    return load_cuts(cache_dir, name).map(resolve)


def cache_dim(cfg: SlamConfig) -> int:
    return int(json.loads((Path(cfg.cache.dir) / INFO).read_text())["dim"])


def cache_key(cfg: SlamConfig) -> str:
    """The key of the encoder that built the cache (changes with its weights and settings)."""
    return str(json.loads((Path(cfg.cache.dir) / INFO).read_text()).get("key", ""))
