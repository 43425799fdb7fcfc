"""What the benchmarks run on: the config, the assets found (or tiny stand-ins), the machine.

The real assets (zoo models, prepared corpus, encoder cache, trained model) are local DVC
outputs, not in git. Whatever is missing is named in ``Env.notes``; without the models or the
corpus every benchmark falls back to tiny random models and a tone corpus, and says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.cut import MonoCut

from slam.config import EncoderConfig, SlamConfig, load_config, to_config
from slam.data.cache import INFO, build_cache, load_cached_cuts
from slam.data.cuts import ENCODER_OUT, load_cuts, manifest_path
from slam.model.speech_llm import ASSETS_INFO
from slam.train.loop import MODEL

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Sizes:
    """How much work each measurement does (the full run must stay within ~15 minutes)."""

    train_warmup: int = 1  # steps per mode before timing (first-call allocations, oneDNN kernels)
    train_steps: int = 4  # timed batches per mode, the same batches for both
    train_reps: int = 2  # runs of each (batch, mode); the fastest counts
    whisper_clips: int = 40
    decode_batch: int = 16  # one batch of test utterances, decoded whole and one at a time
    profile_steps: int = 2
    memory_steps: int = 2
    thread_reps: int = 2  # timed steps per OpenMP setting (after one warm-up step)
    matmul_n: int = 2048
    matmul_reps: int = 5


SMOKE = Sizes(train_warmup=1, train_steps=2, train_reps=1, whisper_clips=3, decode_batch=3,
              profile_steps=1, memory_steps=1, thread_reps=1, matmul_n=256, matmul_reps=2)


@dataclass
class Env:
    cfg: SlamConfig
    kind: str  # "real": the zoo models and prepared corpus; "tiny": random stand-ins
    sizes: Sizes = field(default_factory=Sizes)
    assets: str | None = None  # trained model dir, if there is one
    work: str = ""  # scratch dir for anything the benchmarks must build
    notes: list[str] = field(default_factory=list)
    # Wall-clock time (time.time()) after which loops stop once their minimum is measured:
    # keeps the whole run within its budget on a loaded machine. 0: no limit.
    deadline: float = 0.0

    def out_of_time(self) -> bool:
        return bool(self.deadline) and time.time() > self.deadline

    def to_json(self) -> dict[str, Any]:
        from slam.config import as_dict

        return {"cfg": as_dict(self.cfg), "kind": self.kind, "sizes": dataclasses.asdict(self.sizes),
                "assets": self.assets, "work": self.work, "notes": self.notes,
                "deadline": self.deadline}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Env:
        return cls(cfg=to_config(data["cfg"]), kind=data["kind"], sizes=Sizes(**data["sizes"]),
                   assets=data["assets"], work=data["work"], notes=list(data["notes"]),
                   deadline=data.get("deadline", 0.0))

    @property
    def real_set(self) -> str:
        """The set of real recordings (asterisk_en) when there is one, else the test set."""
        sets = self.cfg.corpus.real_sets
        if sets and manifest_path(self.cfg.corpus.dir, sets[0]).exists():
            return sets[0]
        return "test"


# -- finding the assets ------------------------------------------------------------------------
def _missing(cfg: SlamConfig) -> list[str]:
    missing = []
    for what, path in (("encoder", cfg.encoder.path), ("LLM", cfg.llm.path)):
        if not (Path(path) / "config.json").exists():
            missing.append(f"{what} model {path}")
    for name in ("train", "test"):
        if not manifest_path(cfg.corpus.dir, name).exists():
            missing.append(f"corpus set {manifest_path(cfg.corpus.dir, name)}")
    return missing


def load_env(params: str | Path = "params.yaml", smoke: bool = False, work: str | Path | None = None) -> Env:
    """The configured assets, or tiny random ones (with a note) when models or corpus are missing."""
    work = Path(work or tempfile.mkdtemp(prefix="slam-bench-"))
    sizes = SMOKE if smoke else Sizes()
    if not Path(params).exists():
        return tiny_env(work, sizes, [f"{params} not found: tiny random models and a tone corpus"])
    cfg = load_config(params)
    missing = _missing(cfg)
    if missing:
        return tiny_env(work, sizes, [f"missing {', '.join(missing)}: tiny random models and a tone "
                                      "corpus stand in, so the figures say nothing about the real system"])
    env = Env(cfg=cfg, kind="real", sizes=sizes, work=str(work))
    check_cache(env)
    assets = Path(cfg.train.dir) / MODEL
    if (assets / ASSETS_INFO).exists():
        env.assets = str(assets)
    else:
        env.notes.append(f"no trained model in {assets}: decoding uses an untrained projector + LoRA "
                         f"with max_new_tokens={cfg.decode.max_new_tokens}")
    return env


def check_cache(env: Env) -> None:
    """Note whether the encoder cache can be read; a missing one is rebuilt for the cuts used."""
    info = Path(env.cfg.cache.dir) / INFO
    if not info.exists():
        env.notes.append(f"no encoder cache in {env.cfg.cache.dir}: the cuts the benchmarks use are "
                         "encoded into a scratch cache first (slam.data.cache.encode_set)")


def tiny_env(work: Path, sizes: Sizes, notes: list[str]) -> Env:
    """Tiny random Whisper + Llama, a tone corpus and its cache, all under ``work``."""
    from slam.testing import save_tiny_llm, save_tiny_whisper

    work.mkdir(parents=True, exist_ok=True)
    cfg = SlamConfig()
    cfg.encoder.path = str(save_tiny_whisper(work / "models" / "whisper"))
    cfg.llm.path = str(save_tiny_llm(work / "models" / "llm"))
    cfg.corpus.dir, cfg.cache.dir = str(work / "corpus"), str(work / "cache")
    cfg.train.dir = str(work / "exp")
    cfg.projector.hidden, cfg.peft.r, cfg.train.max_duration = 64, 4, 6.0
    cfg.train.ctc_weight = 1.0  # as the default recipe
    write_tone_corpus(Path(cfg.corpus.dir), {"train": 32, "dev": 4, "test": 8, "asterisk_en": 8})
    build_cache(cfg)
    return env_from_config(cfg, "tiny", sizes, work, notes)


def env_from_config(cfg: SlamConfig, kind: str, sizes: Sizes, work: Path, notes: list[str]) -> Env:
    """An Env over an existing config whose models, corpus and cache are in place."""
    env = Env(cfg=cfg, kind=kind, sizes=sizes, work=str(work), notes=list(notes))
    env.notes.append("no trained model: decoding uses an untrained projector + LoRA "
                     f"with max_new_tokens={cfg.decode.max_new_tokens}")
    return env


def write_tone_corpus(directory: Path, sets: dict[str, int], seed: int = 0) -> None:
    """Sine tones with short transcripts: enough for shapes and code paths, nothing to learn."""
    words = "the quick brown fox jumps over the lazy dog hello world".split()
    rng = np.random.default_rng(seed)
    (directory / "audio").mkdir(parents=True, exist_ok=True)
    for name, count in sets.items():
        cuts = []
        for i in range(count):
            text = " ".join(rng.choice(words, size=int(rng.integers(2, 6))))
            duration = float(rng.uniform(0.5, 2.0))
            t = np.arange(int(16000 * duration)) / 16000
            path = directory / "audio" / f"{name}-{i}.wav"
            sf.write(path, (0.3 * np.sin(2 * np.pi * rng.uniform(150, 600) * t)).astype(np.float32), 16000)
            rec = Recording.from_file(path, recording_id=f"{name}-{i}")
            sup = SupervisionSegment(id=rec.id, recording_id=rec.id, start=0, duration=rec.duration,
                                     text=text)
            cuts.append(MonoCut(id=rec.id, start=0, duration=rec.duration, channel=0, recording=rec,
                                supervisions=[sup]))
        CutSet.from_cuts(cuts).to_file(directory / f"{name}.jsonl.gz")


# -- cached encoder outputs --------------------------------------------------------------------
def cached_set(env: Env, name: str) -> CutSet:
    """``slam.data.cache.load_cached_cuts``, tolerating a cache whose info predates config keys that
    were added later with their default values (the outputs are the same; noted in the results)."""
    cfg = env.cfg
    try:
        return load_cached_cuts(cfg, name)
    except ValueError:
        cache_dir = Path(cfg.cache.dir)
        stored = json.loads((cache_dir / INFO).read_text())["encoder"]
        wanted, defaults = dataclasses.asdict(cfg.encoder), dataclasses.asdict(EncoderConfig())
        added = [k for k in wanted if k not in stored]
        same = all(wanted.get(k) == v for k, v in stored.items())
        if not same or any(wanted[k] != defaults[k] for k in added):
            raise
        note = (f"the encoder cache's info.json predates the encoder config keys {added} (all at their "
                "defaults), so slam.data.cache.load_cached_cuts refuses it; the benchmarks read it anyway")
        if note not in env.notes:
            env.notes.append(note)
        root = cache_dir.resolve()

        def resolve(cut: Any) -> Any:
            arr = cut.custom[ENCODER_OUT].array
            if not Path(arr.storage_path).is_absolute():
                arr.storage_path = str(root / arr.storage_path)
            return cut

        return CutSet.from_cuts(resolve(c) for c in load_cuts(cache_dir, name))


def cached_subset(env: Env, name: str, ids: list[str]) -> CutSet:
    """The cached cuts with these ids, in this order; encoded into a scratch cache if missing."""
    if (Path(env.cfg.cache.dir) / INFO).exists():
        by_id = {c.id: c for c in cached_set(env, name) if c.id in set(ids)}
        return CutSet.from_cuts(by_id[i] for i in ids)
    from slam.data.cache import encode_set
    from slam.model.encoders import build_encoder

    raw = load_cuts(env.cfg.corpus.dir, name)
    wanted = set(ids)
    cuts = CutSet.from_cuts(c for c in raw if c.id in wanted)
    storage = Path(env.work) / "cache" / f"{name}-{abs(hash(tuple(ids))) % 10**8}.h5"
    storage.parent.mkdir(parents=True, exist_ok=True)
    encoder = build_encoder(env.cfg.encoder)
    done = encode_set(encoder, cuts, storage, env.cfg.cache.dtype, torch.device("cpu"), name)
    by_id = {}
    for c in done:
        c.custom[ENCODER_OUT].array.storage_path = str(storage)
        by_id[c.id] = c
    return CutSet.from_cuts(by_id[i] for i in ids)


def spread(cuts: CutSet, n: int) -> CutSet:
    """``n`` cuts evenly spaced through the set sorted by id: deterministic, all lengths."""
    ordered = sorted(cuts, key=lambda c: c.id)
    step = max(1, len(ordered) // max(n, 1))
    return CutSet.from_cuts(ordered[::step][:n])


# -- the machine -------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD features that decide bf16 matmul speed on CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2")))
    except OSError:
        pass
    return []


def machine() -> dict[str, Any]:
    import transformers

    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mem_total_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def loadavg() -> list[float]:
    """Other processes on a shared machine skew timings; the results record the load."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# -- memory ------------------------------------------------------------------------------------
def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Resident memory now (MiB)."""
    now = _status_mb("VmRSS")
    return now if now is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB) since start or the last :func:`reset_peak`."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Reset the peak-RSS mark (Linux: write 5 to clear_refs), so a peak excludes model loading."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
