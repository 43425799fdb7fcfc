"""What a hostile but fair user can throw at slam (issue 23): out-of-range settings, a handed-over
model directory that would run code, an export onto a folder that is not ours, audio folders
with odd suffixes or no audio, hypothesis files with rows missing, a train directory shared by
two configs or two runs, damaged checkpoints, Ctrl-C, a user set of nothing but bad lines,
generated manifests of good and broken lines, audio longer than the encoder's window. One test
per case; each outcome is a clear error naming what is wrong, a counted skip, or a correct result."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import typing
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from lhotse import CutSet, Recording

from slam.cli import main as slam_cli
from slam.compose import compose_params
from slam.config import CODE_LOADING_KEYS, RANGES, ConfigError, Range, SlamConfig, as_dict, to_config
from slam.data.corpora import prepare_corpus
from slam.data.corpora.validate import BadInputError
from slam.data.cuts import cut_text, load_cuts
from slam.decode.inference import (
    EXPORT_MARKER,
    UntrustedModelError,
    cuts_from_inputs,
    load_trained,
    transcribe,
)
from slam.decode.stage import within_window
from slam.model.speech_llm import build_speech_llm
from slam.recipes import recipe_names
from slam.score.stage import score
from slam.stages import run_stage
from slam.track.tracking import start_run
from slam.train.loop import (
    MODEL,
    STATE,
    TRAINABLE,
    checkpoint_key,
    latest_checkpoint,
    save_checkpoint,
    train,
)
from slam.utils import LOCK_FILE, directory_lock

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- config ranges


@pytest.fixture(scope="module")
def composed() -> dict:
    """The committed params, composed as ``python -m slam.compose`` does."""
    return yaml.safe_load(compose_params(config_dir=REPO / "params"))


def _numeric_settings() -> list[tuple[str, type, bool, Range | None]]:
    """(dotted key, int or float, whether a list of them, range) of every numeric setting."""
    found = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if dataclasses.is_dataclass(kind):
                walk(kind, f"{prefix}{f.name}.")
                continue
            is_list = typing.get_origin(kind) is list
            kind = typing.get_args(kind)[0] if is_list else kind
            if kind in (int, float):
                found.append((f"{prefix}{f.name}", kind, is_list, RANGES.get(cls, {}).get(f.name)))

    walk(SlamConfig, "")
    return found


def _outside(valid: Range, kind: type) -> st.SearchStrategy:
    """Values of ``kind`` that ``valid`` refuses."""
    options = []
    if valid.low is not None:
        if kind is int:  # up to the largest int below the range
            options.append(st.integers(max_value=math.floor(valid.low) if valid.low_open
                                       else math.ceil(valid.low) - 1))
        else:
            options.append(st.floats(max_value=valid.low, exclude_max=not valid.low_open, allow_nan=False))
    if valid.high is not None:
        if kind is int:
            options.append(st.integers(min_value=math.ceil(valid.high) if valid.high_open
                                       else math.floor(valid.high) + 1))
        else:
            options.append(st.floats(min_value=valid.high, exclude_min=not valid.high_open, allow_nan=False))
    if kind is float:  # never a valid setting
        options.append(st.sampled_from([math.nan, math.inf, -math.inf]))
    return st.one_of(options).filter(lambda v: v not in valid.special)


NUMERIC = [setting for setting in _numeric_settings() if setting[3] is not None]


def test_every_numeric_setting_has_a_range() -> None:
    assert [key for key, *_, valid in _numeric_settings() if valid is None] == []
    for cls, ranges in RANGES.items():  # and no range names a setting that is gone
        assert set(ranges) <= {f.name for f in dataclasses.fields(cls)}, cls.__name__


@settings(max_examples=80, deadline=None)
@given(case=st.sampled_from(NUMERIC).flatmap(lambda s: st.tuples(st.just(s), _outside(s[3], s[1]))))
def test_generated_out_of_range_values_name_key_value_and_range(composed, case) -> None:
    (key, _, is_list, valid), value = case
    raw = yaml.safe_load(yaml.safe_dump(composed))  # a fresh copy
    section, name = key.rsplit(".", 1)
    # in a list, after a valid entry when there is one
    raw.setdefault(section, {})[name] = [*(raw[section].get(name) or [])[:1], value] if is_list else value
    with pytest.raises(ConfigError) as info:
        to_config(raw)
    message = str(info.value)
    assert message.startswith(f"bad config: {key}: ") and "out of range" in message, message
    assert f"(must be {valid})" in message and "\n" not in message


@pytest.mark.parametrize(
    "override, named",
    [
        ("train.lr=-0.001", "train.lr: -0.001 is out of range (must be > 0)"),
        ("train.lora_lr=0", "train.lora_lr: 0.0 is out of range (must be > 0)"),
        ("train.grad_accum=0", "train.grad_accum: 0 is out of range (must be >= 1)"),
        ("train.max_steps=0", "train.max_steps: 0 is out of range (must be >= 1)"),
        ("train.max_duration=0", "train.max_duration: 0.0 is out of range (must be > 0)"),
        ("train.eval_every=0", "train.eval_every: 0 is out of range (must be >= 1)"),
        ("train.ctc_warmup_steps=-1", "train.ctc_warmup_steps: -1 is out of range (must be >= 0)"),
        ("decode.batch_size=0", "decode.batch_size: 0 is out of range (must be >= 1)"),
        ("decode.num_beams=[1,0]", "decode.num_beams: 0 is out of range (must be >= 1)"),
        ("decode.ctc_weight=1.5", "decode.ctc_weight: 1.5 is out of range (must be [0, 1])"),
        ("decode.keyword_bonus=-1", "decode.keyword_bonus: -1.0 is out of range (must be >= 0)"),
        ("train.lr_restarts=[0]", "train.lr_restarts: 0 is out of range (must be >= 1)"),
        ("corpus.dev_fraction=2", "corpus.dev_fraction: 2.0 is out of range (must be [0, 1])"),
        ("caption.lr=-1", "caption.lr: -1.0 is out of range (must be > 0)"),
        ("bias.ctc_lr=0", "bias.ctc_lr: 0.0 is out of range (must be > 0)"),
        ("train.answer_normalizer=lowercase", "train.answer_normalizer: unknown normalizer 'lowercase' "
                                              "(known: basic_v1, english_v1, mixed_zh_v1, none, "),
        ("score.normalizer=english", "score.normalizer: unknown normalizer 'english'"),
        ("train.ctc_min_count=3", "train.ctc_min_count=3 spells rare tokens in the CTC targets, so joint "
                                  "decoding must spell them too: set decode.ctc_spell_unknown=true"),
    ],
)
def test_compose_refuses_an_out_of_range_override(override: str, named: str) -> None:
    """``dvc exp run -S <override>`` composes through here: it fails before any stage runs."""
    with pytest.raises(ConfigError, match="^bad config: " + re.escape(named)):
        compose_params([override], config_dir=REPO / "params")


def test_unknown_recipe_lists_the_known_ones(composed) -> None:
    # the recipes are the modules of slam.recipes (aac's zero-shot variant has no name): a new
    # module is a new name, with no list to edit
    names = recipe_names()
    assert names == sorted(names) and {"aac", "asr", "asr_bias", "asr_keywords", "st"} <= set(names)
    with pytest.raises(ConfigError) as info:
        to_config({**composed, "recipe": "asrbias"})
    known = ", ".join(names)
    assert str(info.value) == f"bad config: recipe: unknown recipe 'asrbias' (known recipes: {known})"
    for profile in sorted((REPO / "params" / "profile").glob("*.yaml")):  # every profile stays valid
        assert to_config(yaml.safe_load(compose_params([f"profile={profile.stem}"], REPO / "params")))


# ------------------------------------------------------------- a model directory runs no code


def _hostile_model(root: Path, marker: Path, encoder: Path) -> Path:
    """Issue 23's directory: a slam.json whose config sets llm.trust_remote_code beside an
    ``llm/`` folder whose config.json maps the auto classes to a Python file that, imported,
    writes ``marker``."""
    model = root / "handed-over"
    (model / "llm").mkdir(parents=True)
    cfg = SlamConfig()
    cfg.encoder.path, cfg.llm.path, cfg.llm.trust_remote_code = str(encoder), "llm", True
    (model / "slam.json").write_text(json.dumps({"config": as_dict(cfg), "use_cache": False}))
    (model / "llm" / "config.json").write_text(json.dumps({
        "model_type": "evil",
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel",
                     "AutoTokenizer": ["evil.EvilTokenizer", None]},
    }))  # fmt: skip
    (model / "llm" / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n\n\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    return model


def test_handed_over_model_cannot_turn_on_remote_code(tiny_cfg, tiny_models, tmp_path, capsys) -> None:
    marker = tmp_path / "ran.txt"
    model = _hostile_model(tmp_path, marker, tiny_models["whisper"])
    wav = sorted((Path(tiny_cfg.corpus.dir) / "audio").glob("test-*.wav"))[0]
    opt_in = "opt in with --trust-remote-code"
    for argv in (["transcribe", str(model), str(wav)], ["export", str(model), str(tmp_path / "out")]):
        with pytest.raises(SystemExit) as info:
            slam_cli(argv)
        assert info.value.code == 1
        (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
        assert "llm.trust_remote_code=true" in line and opt_in in line and "slam.json" in line, line
    assert not marker.exists() and not (tmp_path / "out").exists()
    with pytest.raises(UntrustedModelError, match=re.escape(opt_in)):
        load_trained(model)
    # the same directory as an MLflow run's model artifacts
    with start_run(tiny_cfg, "llm") as run:
        mlflow.log_artifacts(str(model), "model")
    with pytest.raises(UntrustedModelError, match="llm.trust_remote_code=true"):
        load_trained(run.info.run_id)
    assert not marker.exists()
    # The directory is as hostile as it looks: a user who opts in does run its code (in a
    # process of its own, so that the module cache is a temporary one).
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    argv = ["transcribe", str(model), str(wav), "--trust-remote-code", "--out", str(tmp_path / "h.jsonl")]
    subprocess.run([sys.executable, "-m", "slam.cli", *argv], cwd=tmp_path, env=env, capture_output=True,
                   timeout=300)  # fmt: skip
    assert marker.exists()


def test_every_code_loading_switch_is_guarded() -> None:
    """Each ``*trust_remote_code`` key of the schema is one that stored configs may not set."""
    defaults, keys = SlamConfig(), set()
    for section in dataclasses.fields(defaults):
        value = getattr(defaults, section.name)
        if dataclasses.is_dataclass(value):
            keys |= {f"{section.name}.{f.name}" for f in dataclasses.fields(value) if "trust" in f.name}
    assert keys == set(CODE_LOADING_KEYS)


# ------------------------------------------------------------ export deletes nothing it did not make


def _model_dir(root: Path) -> Path:
    """Enough of a trained dir for export to get as far as its output check."""
    model = root / "models" / "model"
    model.mkdir(parents=True)
    (model / "slam.json").write_text(json.dumps({"config": as_dict(SlamConfig())}))
    return model


def test_export_refuses_a_folder_that_is_not_an_earlier_export(tmp_path, monkeypatch, capsys) -> None:
    model = _model_dir(tmp_path)
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    (mine / "sub" / "data.bin").write_bytes(b"\0" * 10)
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / EXPORT_MARKER).write_text("{}")  # even looking like an export, a repository is not one
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me too")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / EXPORT_MARKER).write_text("{}")
    monkeypatch.chdir(cwd)
    (model.parent / EXPORT_MARKER).write_text("{}")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    cases = [(mine, "is not empty and is not an earlier slam export"), (repo, "is a git repository"),
             (a_file, "is not a directory"), (Path("."), "the working directory"),
             (model.parent, "the model")]  # fmt: skip
    for out, why in cases:
        with pytest.raises(SystemExit) as info:
            slam_cli(["export", str(model), str(out)])
        assert info.value.code == 1
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("slam export: ") and str(out) in line and why in line, line
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.rglob(".*.*"))  # no temporary export left beside them either


# ------------------------------------------------------------------------- transcribe's inputs


def test_transcribe_directory_matches_audio_suffixes_in_any_case(tmp_path) -> None:
    folder = tmp_path / "audio"
    (folder / "deeper").mkdir(parents=True)
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000).astype(np.float32)
    sf.write(folder / "a.wav", tone, 16000)
    sf.write(folder / "B.WAV", tone, 16000, format="WAV")
    sf.write(folder / "deeper" / "c.Flac", tone, 16000, format="FLAC")
    (folder / "notes.TXT").write_text("not audio")
    cuts = cuts_from_inputs([folder])
    assert sorted(Path(c.id).name for c in cuts) == ["B.WAV", "a.wav", "c.Flac"]


def test_transcribe_input_without_audio_is_an_error_naming_it(tmp_path, capsys) -> None:
    empty, text_only, manifest = tmp_path / "empty", tmp_path / "text_only", tmp_path / "none.jsonl.gz"
    empty.mkdir()
    text_only.mkdir()
    (text_only / "readme.md").write_text("no audio here")
    CutSet.from_cuts([]).to_file(manifest)
    for bad in (empty, text_only, manifest):
        with pytest.raises(ValueError, match=re.escape(f"input {bad}: ")):
            cuts_from_inputs([bad])
        # the command fails on its input before it loads any model, and writes no results
        with pytest.raises(SystemExit) as info:
            slam_cli(["transcribe", "no-model-needed", str(bad), "--out", str(tmp_path / "r.jsonl")])
        assert info.value.code == 1 and str(bad) in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()


# ------------------------------------------------------------- scores read references from the set


def _hyp_file(cfg: SlamConfig, label: str, rows: list[dict]) -> None:
    path = Path(cfg.decode.dir) / f"test.{label}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _perfect_rows(cfg: SlamConfig) -> list[dict]:
    return [{"id": c.id, "ref": cut_text(c), "hyp": cut_text(c)} for c in load_cuts(cfg.corpus.dir, "test")]


def test_missing_hypotheses_score_worse_than_the_whole_file(tiny_cfg) -> None:
    rows = _perfect_rows(tiny_cfg)
    _hyp_file(tiny_cfg, "beam1", rows)
    # rows dropped, and the ones left claim a reference equal to their hypothesis: it is ignored
    _hyp_file(tiny_cfg, "beam2", [{**r, "ref": "nonsense", "hyp": "nonsense"} for r in rows[:1]])
    _hyp_file(tiny_cfg, "beam3", rows[:2])
    wer = {label: summary for label, summary in score(tiny_cfg)["llm"].items()}
    assert wer["test.beam1"]["wer"] == 0 and wer["test.beam1"]["missing_hyps"] == 0
    assert wer["test.beam3"]["wer"] > 0 and wer["test.beam3"]["missing_hyps"] == 2
    assert wer["test.beam2"]["wer"] > wer["test.beam3"]["wer"] and wer["test.beam2"]["missing_hyps"] == 3
    assert all(s["utterances"] == len(rows) for s in wer.values())  # every cut of the set is scored


def test_empty_hypothesis_file_scores_wer_100_not_0(tiny_cfg) -> None:
    _hyp_file(tiny_cfg, "beam1", [])
    tiny_cfg.score.reports = ["mer"]  # the extra report reads the set's references too
    summary = score(tiny_cfg)["llm"]["test.beam1"]
    assert summary["wer"] == 1.0 and summary["deletions"] == summary["ref_words"] > 0
    assert "| 100.0 |" in (Path(tiny_cfg.score.dir) / "asr" / "results.md").read_text()
    metrics = Path(tiny_cfg.score.dir) / "asr"
    assert json.loads((metrics / "scores.json").read_text())["llm"]["test.beam1"]["wer"] == 1.0
    assert json.loads((metrics / "mer.json").read_text())["llm"]["test.beam1"]["mer"] == 1.0


def test_hypotheses_for_cuts_the_set_lacks_are_refused(tiny_cfg) -> None:
    _hyp_file(tiny_cfg, "beam1", [*_perfect_rows(tiny_cfg), {"id": "not-in-test", "ref": "a", "hyp": "a"}])
    with pytest.raises(BadInputError, match=r"test\.beam1\.jsonl: 1 hypotheses for cuts that set 'test'"):
        score(tiny_cfg)


# -------------------------------------------------------- checkpoints belong to their run


def _save_steps(directory: Path, key: str, steps: list[int]) -> None:
    """Checkpoints of run ``key``, saved as the train stage saves them (a one-layer model)."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for step in steps:
        save_checkpoint(directory, model, optimizer, scheduler, {"step": step, "run_key": key})


def _owners(directory: Path) -> dict[str, str | None]:
    return {ckpt.name: checkpoint_key(ckpt) for ckpt in sorted(directory.glob("step-*"))}


def test_rotation_deletes_only_the_checkpoints_of_its_own_run(tmp_path) -> None:
    ckpts = tmp_path / "checkpoints"
    _save_steps(ckpts, "old", [10, 12, 14])
    # a new config in the same directory: its steps come before the old run's by name
    _save_steps(ckpts, "new", [2, 4, 6])
    assert _owners(ckpts) == {"step-0000004": "new", "step-0000006": "new",
                              "step-0000012": "old", "step-0000014": "old"}  # fmt: skip
    assert latest_checkpoint(ckpts, "new") == ckpts / "step-0000006"
    # a step the old run holds too: written beside it, and the old run's is left alone
    _save_steps(ckpts, "new", [12])
    assert _owners(ckpts) == {"step-0000006": "new", "step-0000012": "old", "step-0000012-new": "new",
                              "step-0000014": "old"}  # fmt: skip
    assert latest_checkpoint(ckpts, "new") == ckpts / "step-0000012-new"
    assert latest_checkpoint(ckpts, "old") == ckpts / "step-0000014"


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog) -> None:
    ckpts = tmp_path / "checkpoints"
    _save_steps(ckpts, "k", [2, 4, 6])  # steps 4 and 6 kept
    weights = ckpts / "step-0000006" / TRAINABLE
    weights.write_bytes(weights.read_bytes()[:-10])  # a copy cut short
    for name, state in (("step-0000008", "{not json"), ("step-0000009", None)):
        (ckpts / name).mkdir()
        if state is not None:
            (ckpts / name / "state.json").write_text(state)
    with caplog.at_level(logging.WARNING, logger="slam.train.loop"):
        assert latest_checkpoint(ckpts, "k") == ckpts / "step-0000004"
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping checkpoint")]
    assert len(skipped) == 3
    for name in ("step-0000006", "step-0000008", "step-0000009"):
        assert any(str(ckpts / name) in message for message in skipped), (name, skipped)
    # the optimizer state cut short counts as well
    state = ckpts / "step-0000004" / STATE
    state.write_bytes(state.read_bytes()[: len(state.read_bytes()) // 2])
    assert latest_checkpoint(ckpts, "k") is None


# ----------------------------------------------------------------- one run per train.dir


def _params_file(cfg: SlamConfig, path: Path) -> str:
    path.write_text(yaml.safe_dump(as_dict(cfg)))
    return str(path)


def test_a_second_run_on_a_train_dir_stops_naming_the_first(tiny_cfg, tmp_path, capsys) -> None:
    params = _params_file(tiny_cfg, tmp_path / "params.yaml")
    with directory_lock(tiny_cfg.train.dir, "train.dir") as lock:  # the first run
        with pytest.raises(SystemExit) as info:
            run_stage(train, params)
        assert info.value.code == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        line = err.strip().splitlines()[-1]
        assert line.startswith("error in stage train: train.dir ") and str(lock) in line, line
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in line, line
    assert not lock.exists()  # released with the block
    assert not (Path(tiny_cfg.train.dir) / MODEL).exists()


def test_a_stale_lock_is_taken_over_and_every_lock_is_released(tiny_cfg, monkeypatch, caplog) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has any more
    lock = Path(tiny_cfg.train.dir) / LOCK_FILE
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    with caplog.at_level(logging.WARNING, logger="slam.utils"):
        with directory_lock(tiny_cfg.train.dir, "train.dir"):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"taking over the lock {lock} of a run that is gone (pid {gone.pid} " in caplog.text
    assert not lock.exists()

    def fails(cfg: SlamConfig, device: torch.device) -> dict:
        assert lock.exists()
        raise RuntimeError("a fault in training")

    monkeypatch.setattr("slam.train.loop._train", fails)
    with pytest.raises(RuntimeError, match="a fault in training"):
        train(tiny_cfg)
    assert not lock.exists()  # released on the way out


# ------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_in_a_stage_is_one_line_and_exit_130(tmp_path, capsys) -> None:
    params = _params_file(SlamConfig(), tmp_path / "params.yaml")

    def train(cfg: SlamConfig) -> None:  # the stage's name says what a rerun keeps
        raise KeyboardInterrupt

    def prepare_corpus(cfg: SlamConfig) -> None:
        raise KeyboardInterrupt

    for stage, what in ((train, "rerun to resume from the last checkpoint"),
                        (prepare_corpus, "rerun to start it again")):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            run_stage(stage, params)
        assert info.value.code == 130
        assert capsys.readouterr().err == f"interrupted; stage {stage.__name__}: {what}\n"


def test_ctrl_c_while_the_stage_module_imports_is_caught_too(tmp_path, capsys, monkeypatch) -> None:
    params = _params_file(SlamConfig(), tmp_path / "params.yaml")
    (tmp_path / "slow_stage.py").write_text("raise KeyboardInterrupt  # as if torch were importing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit) as info:
        run_stage("slow_stage:train", params)
    assert info.value.code == 130
    assert capsys.readouterr().err == "interrupted; stage train: rerun to resume from the last checkpoint\n"
    for script in Path(__file__).parents[1].glob("pipelines/*.py"):  # every stage imports inside
        assert "run_stage(\"slam." in script.read_text(), script


def test_a_real_sigint_ends_a_stage_process_with_130_and_no_traceback(tmp_path) -> None:
    _params_file(SlamConfig(), tmp_path / "params.yaml")
    # a shell's background job (CI under nohup/&) starts with SIGINT ignored: restore Python's
    # own handler, as an interactive run has it
    script = ("import os, signal\nfrom slam.stages import run_stage\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n\n"
              "def decode(cfg):\n    os.kill(os.getpid(), signal.SIGINT)\n\nrun_stage(decode)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [
        "interrupted; stage decode: rerun to keep the finished hypothesis files and decode the rest"]


# ---------------------------------------------------------- a user set of nothing but bad lines


def test_a_user_set_whose_every_line_is_skipped_is_an_error_naming_it(tmp_path, capsys) -> None:
    wav = tmp_path / "fine.wav"
    sf.write(wav, 0.3 * np.sin(np.arange(16000) / 8).astype(np.float32), 16000)
    manifest = tmp_path / "mine.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [
        {"key": "a", "source": str(tmp_path / "gone.wav"), "target": "words"},
        {"key": "b", "source": str(wav), "target": "  "},
        {"key": "c", "source": str(tmp_path / "also-gone.wav"), "target": "more words"},
    ]))  # fmt: skip
    cfg = SlamConfig()
    cfg.corpus.dir, cfg.corpus.num_utterances, cfg.corpus.real_sets = str(tmp_path / "corpus"), 0, []
    cfg.corpus.user_manifests, cfg.corpus.skip_bad = {"mine": str(manifest)}, True
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SystemExit) as info:
        run_stage(prepare_corpus, _params_file(cfg, tmp_path / "params.yaml"))
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line == (f"error in stage prepare_corpus: user set 'mine' ({manifest}) has no usable cuts: "
                    "3 lines or cuts skipped (missing_audio: 2, no_text: 1; corpus.skip_bad is on)")
    assert not (tmp_path / "corpus" / "mine.jsonl.gz").exists()


# ------------------------------------------------------------- generated bad SLAM-LLM manifests

# kind of line: (what the line is, skip reason with skip_bad or None when the line is fine)
MANIFEST_LINES: dict[str, str | None] = {
    "good": None, "relative": None, "resampled": None, "stereo": None,  # fine: kept
    "bad_json": "bad_line", "not_object": "bad_line", "not_utf8": "bad_line", "no_source": "bad_line",
    "no_target": "no_text", "blank_target": "no_text", "number_target": "no_text", "null_target": "no_text",
    "missing_audio": "missing_audio", "empty_file": "bad_audio", "not_audio": "bad_audio",
    "truncated": "truncated_audio", "nan": "non_finite", "silent": "silent_audio",
    "dup": None,  # a fine line whose key another "dup" line repeats: an error even with skip_bad
    "blank": None,  # a blank line: not an entry at all
}  # fmt: skip
# lines that cannot tell a SLAM-LLM line from a Lhotse one (so cannot decide the file's form)
UNDECIDED = {"bad_json", "not_object"}


@pytest.fixture(scope="module")
def manifest_audio(tmp_path_factory) -> Path:
    """Audio the generated manifests point at, written once: fine, resampled, stereo and broken."""
    root = tmp_path_factory.mktemp("manifest_audio")
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000).astype(np.float32)  # 0.5 s
    sf.write(root / "good.wav", tone, 16000)
    sf.write(root / "resampled.wav", tone[::2], 8000)
    sf.write(root / "stereo.wav", np.stack([tone, tone[::-1]], axis=1), 16000)
    sf.write(root / "nan.wav", np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(root / "silent.wav", np.zeros(8000, np.float32), 16000)
    (root / "empty_file.wav").write_bytes(b"")
    (root / "not_audio.wav").write_text("these are words, not audio\n")
    whole = (root / "good.wav").read_bytes()
    (root / "truncated.wav").write_bytes(whole[: len(whole) // 2])
    return root


def _manifest_line(kind: str, n: int, audio: Path) -> bytes:
    good = {"key": f"u{n}", "source": str(audio / "good.wav"), "target": f"line {n}"}
    record: dict | None = {
        "good": good, "dup": {**good, "key": "shared"},
        "relative": {**good, "source": "good.wav"},  # beside the manifest
        "no_source": {"key": f"u{n}", "target": "words"},
        "no_target": {"key": f"u{n}", "source": good["source"]},
        "blank_target": {**good, "target": "  "}, "number_target": {**good, "target": 5},
        "null_target": {**good, "target": None}, "missing_audio": {**good, "source": str(audio / "gone.wav")},
    }.get(kind)  # fmt: skip
    if record is None and (wav := audio / f"{kind}.wav").exists():
        record = {**good, "source": str(wav)}
    if record is not None:
        return json.dumps(record).encode() + b"\n"
    return {
        "bad_json": b'{"key": "u%d", "source": "good.wav", "target"\n' % n,
        "not_object": b'["good.wav", "words"]\n',
        "not_utf8": b'{"key": "u%d", "source": "good.wav", "target": "caf\xe9"}\n' % n,  # Latin-1
        "blank": b"  \n",
    }[kind]


@settings(max_examples=25, deadline=None)
@given(kinds=st.lists(st.sampled_from(sorted(MANIFEST_LINES)), min_size=1, max_size=8))
def test_generated_bad_manifests_are_a_clear_error_or_counted_skips(manifest_audio, kinds) -> None:
    """Every outcome of ``prepare`` on a SLAM-LLM jsonl of good and broken lines: success
    when nothing is broken (another rate and stereo are not), otherwise a one-line
    BadInputError naming the manifest and a broken line; with skip_bad, the broken lines
    counted by reason in stats.json (kept + skipped = lines), a duplicate key still an error,
    and a set of nothing but broken lines an error naming it (or naming the manifest, when no
    line even shows which form the file is). A broken first line costs that line only."""
    run = manifest_audio / f"run{len(list(manifest_audio.glob('run*')))}"
    run.mkdir()
    manifest = manifest_audio / f"{run.name}.jsonl"  # beside the audio: relative paths resolve
    manifest.write_bytes(b"".join(_manifest_line(kind, n, manifest_audio) for n, kind in enumerate(kinds, 1)))
    entries = [(n, kind) for n, kind in enumerate(kinds, 1) if kind != "blank"]
    broken = {n for n, kind in entries if MANIFEST_LINES[kind]}
    dups = [n for n, kind in entries if kind == "dup"]
    if len(dups) > 1:
        broken |= set(dups[1:])
    fine = [n for n, kind in entries if not MANIFEST_LINES[kind]]
    expected_skips = collections.Counter(MANIFEST_LINES[kind] for _, kind in entries if MANIFEST_LINES[kind])

    for skip_bad in (False, True):
        cfg = SlamConfig()
        cfg.corpus.dir = str(run / f"corpus-{skip_bad}")
        cfg.corpus.num_utterances, cfg.corpus.real_sets = 0, []
        cfg.corpus.user_manifests, cfg.corpus.skip_bad = {"mine": str(manifest)}, skip_bad
        cfg.tracking.uri = f"sqlite:///{manifest_audio / 'mlflow.db'}"
        try:
            sets = prepare_corpus(cfg)
        except (BadInputError, ConfigError) as exc:  # any other type fails the test
            message = str(exc)
            assert "\n" not in message and str(manifest) in message, message
            assert not (Path(cfg.corpus.dir) / "mine.jsonl.gz").exists()
            if not entries or (skip_bad and all(kind in UNDECIDED for _, kind in entries)):
                assert message == f"{manifest}: no manifest entries", message  # read as Lhotse jsonl
            elif len(dups) > 1 and (skip_bad or not broken - set(dups)):
                assert f"duplicate key 'shared' at {manifest}:" in message, message
            elif not skip_bad:
                assert broken and any(f"{manifest}:{n}" in message for n in broken), (kinds, message)
            else:
                assert not fine, (kinds, message)
                reasons = ", ".join(f"{reason}: {k}" for reason, k in sorted(expected_skips.items()))
                assert message == (f"user set 'mine' ({manifest}) has no usable cuts: {len(entries)} lines "
                                   f"or cuts skipped ({reasons}; corpus.skip_bad is on)"), message
            if skip_bad:  # what may be skipped is: an error then is a duplicate or a set of nothing
                assert len(dups) > 1 or not fine, (kinds, message)
            continue
        assert len(dups) < 2 and (skip_bad or not broken), (kinds, skip_bad)
        stats = json.loads((Path(cfg.corpus.dir) / "stats.json").read_text())["sets"]["mine"]
        assert collections.Counter(stats["skipped"]) == expected_skips, (kinds, stats)
        assert stats["kept"] == stats["cuts"] == len(sets["mine"]) == len(fine), (kinds, stats)
        assert stats["kept"] + sum(stats["skipped"].values()) == len(entries)
        assert stats["resampled"] == kinds.count("resampled") and stats["downmixed"] == kinds.count("stereo")
        assert all(cut.sampling_rate == 16000 for cut in sets["mine"])


# ------------------------------------------------------------------- audio past the encoder's window


def _tone_file(path: Path, seconds: float) -> Path:
    sf.write(path, 0.3 * np.sin(2 * np.pi * 300 * np.arange(int(seconds * 16000)) / 16000), 16000)
    return path


def test_transcribe_names_audio_longer_than_the_window_or_skips_it(tiny_cfg, tmp_path) -> None:
    long, short = _tone_file(tmp_path / "long.wav", 31.0), _tone_file(tmp_path / "short.wav", 1.0)
    model = build_speech_llm(tiny_cfg, with_encoder=True).eval()
    cuts = cuts_from_inputs([long, short])
    named = f"{long}: cut {long} is 31.0 s long, past the encoder's 30 s window (it would be cut short)"
    with pytest.raises(BadInputError, match=re.escape(named)):
        transcribe(tiny_cfg, model, cuts)
    rows = transcribe(tiny_cfg, model, cuts, skip_bad=True)
    assert [row["id"] for row in rows] == [str(short)]


def test_train_and_decode_without_cache_keep_long_audio_cut_as_cached(tiny_cfg, tmp_path, caplog) -> None:
    """A set's clip past the window stops neither stage: it is kept, heard up to the window
    (what the cache stage stores for it), logged by name and counted."""
    long = _tone_file(tmp_path / "long.wav", 45.0)
    for name in ("train", "test"):
        cuts = list(load_cuts(tiny_cfg.corpus.dir, name))
        supervision = dataclasses.replace(cuts[0].supervisions[0], id="long", recording_id="long",
                                          duration=45.0)  # fmt: skip
        extra = Recording.from_file(long, recording_id="long").to_cut().with_id("long")
        extra.supervisions = [supervision]
        CutSet.from_cuts([*cuts, extra]).to_file(Path(tiny_cfg.corpus.dir) / f"{name}.jsonl.gz")
    tiny_cfg.train.use_cache = False
    summary = train(tiny_cfg)
    assert summary["truncated_too_long"] == {"train": 1}
    kept = within_window(tiny_cfg, ["test"], 30.0)["test"]  # decode's sets without the cache
    assert "long" in {c.id for c in kept} and len(kept) == 5
    assert f"{long}: cut long is 45.0 s long, past the encoder's 30 s window" in caplog.text


def test_the_whisper_baseline_decodes_long_audio_whole(tiny_cfg, tmp_path, monkeypatch) -> None:
    """A clip past Whisper's 30 s chunk goes to transformers' long-form decoding, all of it."""
    from transformers import WhisperForConditionalGeneration

    from slam.decode.stage import decode_whisper

    long = _tone_file(tmp_path / "long.wav", 45.0)
    cuts = list(load_cuts(tiny_cfg.corpus.dir, "test"))
    supervision = dataclasses.replace(cuts[0].supervisions[0], id="long", recording_id="long", duration=45.0)
    extra = Recording.from_file(long, recording_id="long").to_cut().with_id("long")
    extra.supervisions = [supervision]
    CutSet.from_cuts([*cuts, extra]).to_file(Path(tiny_cfg.corpus.dir) / "test.jsonl.gz")
    calls = []

    def generate(self, input_features, **kwargs):
        calls.append((input_features.shape[0], input_features.shape[-1], kwargs.get("return_timestamps")))
        return torch.full((input_features.shape[0], 3), self.generation_config.decoder_start_token_id)

    monkeypatch.setattr(WhisperForConditionalGeneration, "generate", generate)
    tiny_cfg.baseline.sets = ["test"]
    decode_whisper(tiny_cfg)
    assert (1, 4500, True) in calls  # 45 s of mel frames, one clip, timestamps for the windows
    assert all(frames == 3000 for _, frames, timestamps in calls if not timestamps)
    rows = [json.loads(line) for line in (Path(tiny_cfg.baseline.dir) / "test.beam1.jsonl").open()]
    assert "long" in {row["id"] for row in rows} and len(rows) == len(cuts) + 1
