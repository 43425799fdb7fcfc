"""Run the frozen encoder once over every cut and keep its outputs (Lhotse feature storage).

Training then reads ``[frames, dim]`` arrays instead of re-running the encoder every step.
``info.json`` records the encoder config and a key of its weights and settings: training
refuses a cache whose encoder differs from the configured one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet
from lhotse.features.io import NumpyHdf5Writer
from tqdm import tqdm

from slam.config import SlamConfig
from slam.data import ENCODER_OUT, load_cuts, manifest_path
from slam.encoders import AudioEncoder, build_encoder
from slam.encoders.base import pad_features
from slam.tuning import encoder_trains
from slam.utils import atomic_write_json, setup_runtime

log = logging.getLogger(__name__)
INFO = "info.json"


def corpus_sets(corpus_dir: str | Path) -> list[str]:
    """Names of the sets the prepare stage wrote (``<name>.jsonl.gz``)."""
    return sorted(p.name.removesuffix(".jsonl.gz") for p in Path(corpus_dir).glob("*.jsonl.gz"))


@torch.no_grad()
def encode_set(
    encoder: AudioEncoder, cuts: CutSet, storage: Path, dtype: str, device: torch.device, desc: str
) -> CutSet:
    """Encode each cut at its true length; return the cuts with ``encoder_out`` attached."""
    out = []
    tmp = storage.with_name(f".tmp-{storage.name}")  # the writer keeps the .h5 suffix
    with NumpyHdf5Writer(tmp, mode="w") as writer:
        for cut in tqdm(cuts, desc=desc, unit="cut"):
            feats, lengths = pad_features([encoder.load_input(cut)])
            hidden, hidden_len = encoder(feats.to(device), lengths.to(device))
            array = hidden[0, : hidden_len[0]].float().cpu().numpy().astype(np.dtype(dtype))
            manifest = writer.store_array(
                # a sequence-wise encoder gives one vector for the whole clip
                cut.id, array, frame_shift=1.0 / encoder.frame_rate if encoder.frame_rate else cut.duration,
                temporal_dim=0,
            )
            manifest.array.storage_path = storage.name  # relative to the cache dir, see below
            out.append(cut.with_custom(ENCODER_OUT, manifest))
    tmp.replace(storage)
    return CutSet.from_cuts(out)


def build_cache(cfg: SlamConfig) -> dict:
    """The cache stage: every corpus set -> ``<cache.dir>/<set>.{h5,jsonl.gz}`` + info."""
    device = setup_runtime(cfg.runtime)
    cache_dir = Path(cfg.cache.dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if encoder_trains(cfg):
        # The encoder trains, so its outputs change every step: nothing to cache. The stage
        # still writes its info so that DVC has an output and the reason is on record.
        info = {"encoder": dataclasses.asdict(cfg.encoder), "skipped": "the encoder trains", "sets": {}}
        atomic_write_json(cache_dir / INFO, info)
        log.info("encoder fine-tuning is on (train.encoder_layers / layer weighting): no cache")
        return info
    encoder = build_encoder(cfg.encoder).to(device)
    info = {
        "encoder": dataclasses.asdict(cfg.encoder),
        "key": encoder.cache_key(),
        "dim": encoder.dim,
        "frame_rate": encoder.frame_rate,
        "dtype": cfg.cache.dtype,
        "sets": {},
    }
    for name in corpus_sets(cfg.corpus.dir):
        cuts = load_cuts(cfg.corpus.dir, name)
        cached = encode_set(encoder, cuts, cache_dir / f"{name}.h5", cfg.cache.dtype, device, name)
        # Storage paths are kept relative so the cache dir can move (DVC checkout, exp temp
        # dirs); loaders resolve them against the cache dir.
        cached.to_file(manifest_path(cache_dir, name))
        info["sets"][name] = len(cached)
        log.info("cached %d cuts of %s", len(cached), name)
    atomic_write_json(cache_dir / INFO, info)
    return info


def load_cached_cuts(cfg: SlamConfig, name: str) -> CutSet:
    """Cached cuts of one set, checked against the configured encoder."""
    cache_dir = Path(cfg.cache.dir)
    info_path = cache_dir / INFO
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path} missing: run the cache stage first")
    info = json.loads(info_path.read_text())
    if info["encoder"] != dataclasses.asdict(cfg.encoder):
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
