"""Interrupted work picks up where it stopped and ends where an uninterrupted run ends.

Training is killed with SIGKILL (no handler, no cleanup: as the OOM killer or a lost node
would) at a random moment after its first checkpoint and restarted; the cache and decode
stages are interrupted after their first finished set and rerun: finished work is kept, not
recomputed.
"""

from __future__ import annotations

import copy
import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

import slam.data.cache
from slam.config import SlamConfig, as_dict
from slam.data.cache import build_cache, load_cached_cuts
from slam.decode.hyps import read_hyps
from slam.decode.stage import decode
from slam.model.speech_llm import SpeechLLM
from slam.train.loop import CHECKPOINTS, MODEL, TRAINABLE, train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow store for the module: creating one costs seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture()
def cfg(tiny_cfg, tracking_uri) -> SlamConfig:
    tiny_cfg.tracking.uri = tracking_uri
    return tiny_cfg


def _curve(cfg: SlamConfig, name: str, column: str) -> list[float]:
    with (Path(cfg.score.dir) / cfg.recipe / name).open() as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def _last_checkpoint(cfg: SlamConfig) -> int:
    steps = [int(p.name.removeprefix("step-")) for p in (Path(cfg.train.dir) / CHECKPOINTS).glob("step-*")]
    return max(steps, default=0)


def _start_training(cfg: SlamConfig, workdir: Path) -> subprocess.Popen:
    """``python pipelines/train.py`` as DVC runs it, in ``workdir`` with its params.yaml."""
    workdir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(as_dict(cfg)), workdir / "params.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLAM_LOG_LEVEL": "INFO"}
    # stderr to a file: a pipe nobody reads while polling could fill up and stall the run
    with (workdir / "stderr.log").open("a") as log:
        return subprocess.Popen([sys.executable, str(REPO / "pipelines" / "train.py")], cwd=workdir,
                                env=env, stdout=subprocess.DEVNULL, stderr=log)


def _stderr(workdir: Path) -> str:
    return (workdir / "stderr.log").read_text()[-3000:]


def _kill_after_checkpoint(workdir: Path, cfg: SlamConfig, at_least: int, rng: random.Random,
                           note: str) -> int:
    """Start training; SIGKILL it at a random moment once a checkpoint of step >= ``at_least``
    exists. Returns the step of the last checkpoint it left."""
    proc = _start_training(cfg, workdir)
    deadline = time.monotonic() + 170
    while _last_checkpoint(cfg) < at_least:
        if proc.poll() is not None:
            pytest.fail(f"{note}: training ended before step {at_least}: {_stderr(workdir)}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{note}: no checkpoint of step {at_least} in time: {_stderr(workdir)}")
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.2))  # somewhere in the steps (or a checkpoint write) after it
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"{note}: training ended before the kill"
    return _last_checkpoint(cfg)


def test_training_killed_at_a_random_moment_resumes_to_the_same_result(cfg, tmp_path):
    cfg.train.max_steps = 48
    cfg.train.checkpoint_every = 2
    cfg.train.eval_every = 8
    cfg.runtime.threads = 1  # the same arithmetic in this process and the subprocesses
    build_cache(cfg)

    reference = cfg.train.dir
    threads = torch.get_num_threads()
    try:
        train(cfg)  # uninterrupted, same seed
    finally:
        torch.set_num_threads(threads)
    ref_weights = load_file(str(Path(cfg.train.dir) / CHECKPOINTS / "step-0000048" / TRAINABLE))
    ref_loss, ref_dev = _curve(cfg, "train_curve.csv", "loss"), _curve(cfg, "dev_curve.csv", "dev_loss")

    cfg.train.dir, cfg.score.dir = str(tmp_path / "exp-killed"), str(tmp_path / "metrics-killed")
    # SLAM_KILL_SEED=<seed from a failure message> replays its kill point (up to timing)
    seed = int(os.environ.get("SLAM_KILL_SEED") or int.from_bytes(os.urandom(4), "little"))
    rng = random.Random(seed)
    note = f"SLAM_KILL_SEED={seed}"
    workdir = tmp_path / "run"
    # each start costs seconds of imports: one kill per test run, a random one each time
    left = _kill_after_checkpoint(workdir, cfg, rng.choice(range(2, 16, 2)), rng, note)
    assert 2 <= left < 48, note
    proc = _start_training(cfg, workdir)  # rerun: resumes from the checkpoint it left
    assert proc.wait(timeout=170) == 0, f"{note}: {_stderr(workdir)}"
    checkpoint = Path(cfg.train.dir) / CHECKPOINTS / f"step-{left:07d}"
    assert f"resuming from {checkpoint} (step {left})" in (workdir / "stderr.log").read_text(), note

    resumed = load_file(str(Path(cfg.train.dir) / CHECKPOINTS / "step-0000048" / TRAINABLE))
    assert resumed.keys() == ref_weights.keys()
    for name, value in ref_weights.items():
        torch.testing.assert_close(resumed[name], value, atol=1e-5, rtol=1e-4, msg=f"{note}: {name}")
    assert _curve(cfg, "train_curve.csv", "loss") == pytest.approx(ref_loss, rel=1e-4), note
    assert _curve(cfg, "train_curve.csv", "step") == list(range(1, 49)), note
    assert _curve(cfg, "dev_curve.csv", "dev_loss") == pytest.approx(ref_dev, rel=1e-4), note
    # the trained assets are those of the last step (the same files as the reference run's)
    assert sorted(p.name for p in (Path(cfg.train.dir) / MODEL).rglob("*")) == sorted(
        p.name for p in (Path(reference) / MODEL).rglob("*")
    )


class Interrupt(Exception):
    """Stands in for a kill in the middle of a stage."""


def _interrupt_after(calls: list, real, limit: int):
    """Wrap ``real``: count calls and raise on call number ``limit + 1``."""

    def wrapped(*args, **kwargs):
        calls.append(args)
        if len(calls) > limit:
            raise Interrupt
        return real(*args, **kwargs)

    return wrapped


def test_cache_stage_resumes_set_by_set(cfg):
    cache_dir = Path(cfg.cache.dir)
    (Path(cfg.corpus.dir) / "train.jsonl.gz").unlink()  # two sets are enough, and quicker
    calls: list = []

    def run(limit: int) -> dict:
        """The cache stage, dying when it starts set number ``limit + 1``; the sets it began."""
        calls.clear()
        wrapped = _interrupt_after(calls, slam.data.cache.encode_set, limit)
        with mock.patch.object(slam.data.cache, "encode_set", wrapped):
            return build_cache(cfg)

    with pytest.raises(Interrupt):
        run(1)  # dev is encoded, then the run dies on test ...
    (cache_dir / ".test.h5.x1y2z3.h5").write_bytes(b"half an HDF5 file")  # ... half way through it
    first_dev = (cache_dir / "dev.h5").read_bytes()
    info = run(99)
    assert [args[5] for args in calls] == ["test"]  # dev was kept
    assert info["sets"] == {"dev": 4, "test": 4}
    assert (cache_dir / "dev.h5").read_bytes() == first_dev
    assert not list(cache_dir.glob(".*.h5"))

    # the same outputs as one uninterrupted run
    fresh = copy.deepcopy(cfg)
    fresh.cache.dir = str(cache_dir) + "-fresh"
    build_cache(fresh)
    for name in ("dev", "test"):
        resumed = {c.id: c.load_custom("encoder_out") for c in load_cached_cuts(cfg, name)}
        whole = {c.id: c.load_custom("encoder_out") for c in load_cached_cuts(fresh, name)}
        assert resumed.keys() == whole.keys()
        for cut_id, array in whole.items():
            assert (resumed[cut_id] == array).all()

    # a set whose corpus changed is encoded again, the others are kept
    corpus = Path(cfg.corpus.dir)
    (corpus / "dev.jsonl.gz").write_bytes((corpus / "test.jsonl.gz").read_bytes())
    run(99)
    assert [args[5] for args in calls] == ["dev"]
    # another encoder setting redoes every set; until that run ends no info.json claims the
    # half-rebuilt cache is whole
    cfg.cache.dtype = "float32"
    with pytest.raises(Interrupt):
        run(1)
    with pytest.raises(FileNotFoundError, match="run the cache stage first"):
        load_cached_cuts(cfg, "dev")
    run(99)
    assert [args[5] for args in calls] == ["test"]
    assert load_cached_cuts(cfg, "dev")[0].load_custom("encoder_out").dtype == "float32"


SEARCH = "generate_from_audio"  # every decoding search goes through it


def test_decode_stage_resumes_per_set_and_beam(cfg, tmp_path):
    cfg.train.max_steps = 2
    build_cache(cfg)
    train(cfg)
    cfg.decode.sets = ["test", "dev"]  # two sets: (set, beam) pairs finish one after another
    cfg.decode.num_beams = [1, 2]
    cfg.decode.batch_size = 4  # one batch per set: one generate call per (set, beam)
    cfg.decode.max_new_tokens = 4  # a random LLM never stops: keep generation short
    hyps_dir = Path(cfg.decode.dir)
    calls: list = []

    def run() -> dict:
        calls.clear()
        with mock.patch.object(SpeechLLM, SEARCH, _interrupt_after(calls, getattr(SpeechLLM, SEARCH), 99)):
            return decode(cfg)

    # test beam 1, test beam 2 and dev beam 1 are decoded; the run dies in dev beam 2
    with mock.patch.object(SpeechLLM, SEARCH, _interrupt_after(calls, getattr(SpeechLLM, SEARCH), 3)):
        with pytest.raises(Interrupt):
            decode(cfg)
    done = sorted(p.name for p in hyps_dir.glob("*.beam*.jsonl"))
    assert done == ["dev.beam1.jsonl", "test.beam1.jsonl", "test.beam2.jsonl"]
    before = {name: (hyps_dir / name).read_bytes() for name in done}

    timing = run()
    assert len(calls) == 1  # only dev beam 2 was decoded
    assert set(timing) == {"test.beam1", "test.beam2", "dev.beam1", "dev.beam2"}
    assert all((hyps_dir / name).read_bytes() == data for name, data in before.items())

    # the same hypotheses as one uninterrupted run
    cfg.decode.dir = str(tmp_path / "hyps-fresh")
    decode(cfg)
    for name in timing:
        assert read_hyps(tmp_path / "hyps-fresh" / f"{name}.jsonl") == read_hyps(hyps_dir / f"{name}.jsonl")

    # retrained assets decode everything again; a set no longer asked for loses its files,
    # so the score stage does not score stale hypotheses
    cfg.decode.dir = str(hyps_dir)
    cfg.decode.sets = ["test"]
    info = Path(cfg.train.dir) / MODEL / "slam.json"
    info.write_text(info.read_text() + "\n")  # any change to the trained files stands for a retrain
    run()
    assert len(calls) == 2
    assert sorted(p.name for p in hyps_dir.glob("*.beam*.jsonl")) == ["test.beam1.jsonl", "test.beam2.jsonl"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temp_file(tmp_path):
    """Every stage writes through slam.utils.atomic_path: a write that dies half-way (here an
    exception after half the bytes) leaves what was there before and nothing beside it."""
    from slam.utils import atomic_path, atomic_write_text

    target = tmp_path / "stats.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target, ".json") as tmp:
            tmp.write_text("ne")
            raise RuntimeError("killed half-way")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]
    with atomic_path(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n" and oct(target.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]
