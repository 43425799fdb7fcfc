"""scripts/adopt_checkpoint.py: a continuation inherits the adopted run's best as it stood at the
adopted step, never a best from after it (the train stage ends on the best weights when no later
evaluation beats them)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "adopt_checkpoint.py"


@pytest.fixture(scope="module")
def adopt_best():
    spec = importlib.util.spec_from_file_location("adopt_checkpoint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.adopt_best


def checkpoint(path: Path, weights: bytes, **state) -> dict:
    path.mkdir(parents=True)
    (path / "trainable.safetensors").write_bytes(weights)
    (path / "state.json").write_text(json.dumps(state))
    return state


@pytest.mark.parametrize(
    ("best_step", "step_was_best", "expected"),
    [
        (1500, False, (b"best", 1500, 0.41)),  # the run's best before the step: kept
        (3000, True, (b"step", 2000, 0.39)),  # a later best: the step's own weights instead
        (3000, False, None),  # a later best and the step was not the best: none
    ],
)
def test_the_adopted_best_is_the_best_as_at_the_adopted_step(tmp_path, adopt_best, best_step, step_was_best,
                                                             expected):  # fmt: skip
    run = tmp_path / "run" / "checkpoints"
    checkpoint(run / "best", b"best", run_key="old", step=best_step, dev_wer=0.41)
    state = checkpoint(run / "step-0002000", b"step", run_key="old", step=2000, best_dev_wer=0.39,
                       best_step=2000 if step_was_best else 1500)  # fmt: skip
    target = tmp_path / "new" / "best"
    adopt_best(run / "step-0002000", state, target, "new")
    if expected is None:
        assert not target.exists()
        return
    weights, step, dev_wer = expected
    record = json.loads((target / "state.json").read_text())
    assert (target / "trainable.safetensors").read_bytes() == weights
    assert record == {"step": step, "dev_wer": dev_wer, "run_key": "new"}
