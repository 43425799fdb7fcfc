"""Continue another run's checkpoint under this checkout's config: the experiments that extend a
trained run with one change (EXT3000, EXT3K, MSG in metrics/experiments/README.md).

    python scripts/adopt_checkpoint.py /path/to/exp/asr/checkpoints/step-0002000 [--params params.yaml]

Copies the checkpoint (and its run's best as it stood at that step) into this config's
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
from slam.train.loop import BEST, CHECKPOINTS, TRAINABLE, best_record, run_key
from slam.utils import atomic_dir, atomic_write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = load_config(args.params)
    key = run_key(cfg)
    target = Path(cfg.train.dir) / CHECKPOINTS
    target.mkdir(parents=True, exist_ok=True)
    if not (args.checkpoint / "state.json").is_file():
        raise SystemExit(f"{args.checkpoint}: no state.json, not a training checkpoint")
    state = json.loads((args.checkpoint / "state.json").read_text())
    copy = target / args.checkpoint.name
    shutil.copytree(args.checkpoint, copy, dirs_exist_ok=True)
    print(f"{args.checkpoint} (run {state['run_key']}) -> {copy} (run {key})")
    (copy / "state.json").write_text(json.dumps({**state, "run_key": key}, indent=2))
    adopt_best(args.checkpoint, state, target / BEST, key)


def adopt_best(checkpoint: Path, state: dict, target: Path, key: str) -> None:
    """The adopted run's best weights as they stood at the checkpoint's step, into ``target``
    under ``key``: its ``best`` dir if that is no later than the step, else the checkpoint's own
    weights if the step was the best then. A best from after the step is weights the
    continuation never had: the train stage would end on them if no later evaluation beat it."""
    best = checkpoint.parent / BEST
    record = json.loads((best / "state.json").read_text()) if (best / "state.json").is_file() else None
    if record is not None and record["step"] <= state["step"]:
        source = best
    elif state.get("best_step") == state["step"]:
        source, record = checkpoint, {"step": state["step"], "dev_wer": state["best_dev_wer"]}
    else:
        print(f"{best}: none as at step {state['step']}; the continuation's evaluations pick its best")
        return
    with atomic_dir(target) as tmp:
        shutil.copy2(source / TRAINABLE, tmp / TRAINABLE)
        atomic_write_json(tmp / "state.json", best_record(key, record["step"], record["dev_wer"]))
    print(f"{source} (step {record['step']}, dev WER {record['dev_wer']:.4f}) -> {target} (run {key})")


if __name__ == "__main__":
    main()
