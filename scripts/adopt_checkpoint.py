"""Continue another run's checkpoint under this checkout's config: the experiments that extend a
trained run with one change (EXT3000, EXT3K, MSG in metrics/experiments/README.md).

    python scripts/adopt_checkpoint.py /path/to/exp/asr/checkpoints/step-0002000 [--params params.yaml]

Copies the checkpoint (and its run's ``best``, if beside it) into this config's
``train.dir/checkpoints`` with this config's run key, so the train stage resumes from it instead
of refusing another run's step. The learning-rate schedule then continues from the checkpoint's
step by this config's ``lr_lambda``: with ``train.lr_restarts`` ending a segment at that step,
the steps after it are the ones a run of this config from scratch would take, on the weights
of the adopted run. Say so when you report the result: the corpus or steps before that step were
the other run's.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from slam.config import load_config
from slam.train.loop import BEST, CHECKPOINTS, run_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = load_config(args.params)
    key = run_key(cfg)
    target = Path(cfg.train.dir) / CHECKPOINTS
    target.mkdir(parents=True, exist_ok=True)
    sources = [args.checkpoint] + [p for p in [args.checkpoint.parent / BEST] if p.is_dir()]
    for source in sources:
        if not (source / "state.json").is_file():
            raise SystemExit(f"{source}: no state.json, not a training checkpoint")
        copy = target / source.name
        shutil.copytree(source, copy, dirs_exist_ok=True)
        state = json.loads((copy / "state.json").read_text())
        print(f"{source} (run {state['run_key']}) -> {copy} (run {key})")
        state["run_key"] = key
        (copy / "state.json").write_text(json.dumps(state, indent=2))


if __name__ == "__main__":
    main()
