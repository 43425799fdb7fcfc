"""Two processes under torchrun (gloo on CPU) against one process with the same global batch."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from slam.config import as_dict
from slam.data.cache import build_cache
from slam.decode.hyps import read_hyps
from slam.train.loop import train

REPO = Path(__file__).resolve().parents[2]


def torchrun(stage: str, cfg, workdir: Path, nproc: int = 2) -> None:
    """Run ``pipelines/<stage>.py`` on ``nproc`` local processes, as a user would."""
    workdir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(as_dict(cfg)), workdir / "params.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(REPO / "pipelines" / f"{stage}.py")]
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def losses(cfg) -> list[float]:
    with (Path(cfg.score.dir) / cfg.recipe / "train_curve.csv").open() as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(tiny_cfg, tmp_path, strategy):
    cfg = tiny_cfg
    cfg.peft.dropout = 0.0  # dropout masks come from per-process RNG streams
    cfg.train.max_duration = 2.5  # several batches per epoch: the steps stay inside epoch one
    cfg.train.max_steps = 3
    cfg.train.eval_every = 3
    cfg.runtime.strategy = strategy
    for key in ("corpus.dir", "cache.dir", "tracking.uri"):  # absolute: the runs use other cwds
        assert "tmp" in str(OmegaConf.select(OmegaConf.create(as_dict(cfg)), key))
    build_cache(cfg)

    cfg.train.grad_accum = 2  # one process, two batches per step ...
    train(cfg)
    single = losses(cfg)

    cfg.train.grad_accum = 1  # ... against two processes, one batch each per step
    cfg.train.dir = str(tmp_path / "exp-2proc")
    cfg.score.dir = str(tmp_path / "metrics-2proc")
    cfg.decode.dir = str(tmp_path / "exp-2proc" / "hyps")
    torchrun("train", cfg, tmp_path / "run-train")
    assert losses(cfg) == pytest.approx(single, rel=1e-4)
    assert (Path(cfg.train.dir) / "model" / "projector.safetensors").exists()

    if strategy == "ddp":  # decoding sharded over ranks: every utterance once, in order
        cfg.decode.batch_size = 1  # four batches for two ranks
        torchrun("decode", cfg, tmp_path / "run-decode")
        hyps = read_hyps(Path(cfg.decode.dir) / "test.beam1.jsonl")
        from slam.data.cache import load_cached_cuts
        from slam.data.cuts import batches_of

        expected = [c.id for batch in batches_of(load_cached_cuts(cfg, "test"), cfg.decode.batch_size)
                    for c in batch]
        assert [h["id"] for h in hyps] == expected
