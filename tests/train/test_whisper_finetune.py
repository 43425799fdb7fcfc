"""Whisper + fine-tuning (slam.train.whisper_finetune): the decoder learns from the cached training
encoder outputs while the encoder stays as it is, keep-best, the baseline stage's switch, and the
fine-tuned row of the results table and the breakdown report."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from transformers import AutoTokenizer, WhisperForConditionalGeneration

import slam.train.whisper_finetune as wf
from slam.config import ConfigError, SlamConfig
from slam.data.cache import build_cache, load_cached_cuts
from slam.data.cuts import batches_of, cut_text, load_cuts
from slam.decode.hyps import RUN_FILE, read_hyps
from slam.decode.stage import decode_baseline
from slam.model.speech_llm import IGNORE_INDEX
from slam.score.metrics import score_wer
from slam.score.stage import score
from slam.track.tracking import tracking_uri

CPU = torch.device("cpu")
FINETUNED_ROW = "Whisper (own decoder), fine-tuned on the training set"


@pytest.fixture()
def cached(tiny_cfg: SlamConfig) -> SlamConfig:
    build_cache(tiny_cfg)
    tiny_cfg.baseline.max_new_tokens = 4  # a random decoder never stops by itself
    return tiny_cfg


def _whisper(cfg: SlamConfig) -> tuple[WhisperForConditionalGeneration, object, wf.Prompting]:
    model = WhisperForConditionalGeneration.from_pretrained(cfg.encoder.path)
    tokenizer = AutoTokenizer.from_pretrained(cfg.encoder.path)
    return model, tokenizer, wf.prompting(model, tokenizer, cfg)


@torch.no_grad()
def _loss(model, tokenizer, prompt, cuts) -> float:
    """Teacher-forced loss over all of ``cuts``, per batch averaged."""
    dataset = wf.whisper_dataset(tokenizer)
    losses = [wf.teacher_forced_loss(model, dataset[b], prompt, CPU).item() for b in batches_of(cuts, 8)]
    return sum(losses) / len(losses)


def _weights(model, prefix: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(prefix)}


def test_teacher_forcing_predicts_each_token_from_the_one_before():
    prompt = wf.Prompting(prefix=[1, 8], eos=0, generate={})
    inputs, labels = wf.teacher_forcing([[5, 6, 7], [9]], prompt, max_len=100)
    assert inputs.tolist() == [[1, 8, 5, 6, 7], [1, 8, 9, 0, 0]]
    ignore = IGNORE_INDEX
    assert labels.tolist() == [[ignore, 5, 6, 7, 0], [ignore, 9, 0, ignore, ignore]]
    # a transcript longer than the decoder's positions is cut to fit
    inputs, labels = wf.teacher_forcing([list(range(10, 20))], prompt, max_len=6)
    assert inputs.shape == (1, 6) and labels[0, -1] == 0


def test_finetuning_lowers_the_loss_and_trains_only_the_decoder(cached):
    cached.baseline.finetune_lr = 3e-3
    cached.baseline.finetune_minutes = 60.0  # max_steps ends it
    model, tokenizer, prompt = _whisper(cached)
    train_cuts = load_cached_cuts(cached, "train")
    before = _loss(model, tokenizer, prompt, train_cuts)
    encoder, decoder = _weights(model, "model.encoder."), _weights(model, "model.decoder.")
    summary = wf.train_decoder(model, tokenizer, prompt, train_cuts, None, cached, CPU, max_steps=12)
    assert summary["steps"] == 12 and "best_step" not in summary  # no dev cuts: the last weights
    after = _loss(model, tokenizer, prompt, train_cuts)
    assert after < 0.8 * before, (before, after)
    for name, value in _weights(model, "model.encoder.").items():
        assert torch.equal(value, encoder[name]), name
    changed = [n for n, v in _weights(model, "model.decoder.").items() if not torch.equal(v, decoder[n])]
    assert set(changed) == set(decoder)
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("model.encoder."))


def test_keep_best_restores_the_step_with_the_lowest_dev_wer(cached, monkeypatch):
    cached.baseline.finetune_lr = 1e-3
    cached.baseline.finetune_minutes = 60.0
    cached.baseline.finetune_eval_every = 2
    model, tokenizer, prompt = _whisper(cached)
    wers = iter([0.6, 0.3, 0.5])  # steps 2, 4 and 5 (the last, evaluated too)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def fake_dev_wer(m, *_args) -> float:
        seen[len(seen)] = _weights(m, "model.decoder.")
        return next(wers)

    monkeypatch.setattr(wf, "dev_wer", fake_dev_wer)
    dev = load_cached_cuts(cached, "dev")
    summary = wf.train_decoder(model, tokenizer, prompt, load_cached_cuts(cached, "train"), dev, cached, CPU,
                               max_steps=5)  # fmt: skip
    assert [r["step"] for r in summary["dev_curve"]] == [2, 4, 5]
    assert summary["best_step"] == 4 and summary["best_dev_wer"] == 0.3
    kept = _weights(model, "model.decoder.")
    assert all(torch.equal(kept[n], seen[1][n]) for n in kept)  # the step-4 weights ...
    assert not all(torch.equal(kept[n], seen[2][n]) for n in kept)  # ... not the last ones


def test_no_finetuning_writes_no_finetuned_files(tiny_cfg, monkeypatch):
    tiny_cfg.baseline.max_new_tokens = 3
    out = Path(tiny_cfg.baseline.dir)
    out.mkdir(parents=True)
    (out / f"test.{wf.FINETUNED}.jsonl").write_text("")  # an earlier run's, fine-tuning on

    def refuse(cfg):
        raise AssertionError("fine-tuning ran with baseline.finetune_minutes=0")

    monkeypatch.setattr(wf, "finetune_whisper", refuse)
    assert tiny_cfg.baseline.finetune_minutes == 0
    decode_baseline(tiny_cfg)
    assert (out / "test.beam1.jsonl").is_file()
    assert not list(out.glob(f"*.{wf.FINETUNED}.jsonl")) and not (out / wf.SUMMARY).exists()


def test_finetuning_writes_each_set_into_the_baseline_run(cached):
    cached.baseline.finetune_minutes = 0.01  # 0.6 s of steps
    cached.baseline.finetune_dev_cuts = 2
    cached.baseline.finetune_eval_every = 3
    decode_baseline(cached)
    out = Path(cached.baseline.dir)
    rows = read_hyps(out / f"test.{wf.FINETUNED}.jsonl")
    cuts = load_cuts(cached.corpus.dir, "test")
    assert sorted(r["id"] for r in rows) == sorted(c.id for c in cuts)
    assert {r["id"]: r["ref"] for r in rows} == {c.id: cut_text(c) for c in cuts}
    summary = json.loads((out / wf.SUMMARY).read_text())
    assert summary["steps"] >= 1 and 0 < summary["train_minutes"] < 0.05
    assert summary["best_step"] in [r["step"] for r in summary["dev_curve"]]
    # one MLflow run: Whisper as shipped and fine-tuned
    mlflow.set_tracking_uri(tracking_uri(cached))
    run = mlflow.get_run(json.loads((out / RUN_FILE).read_text())["mlflow_run_id"])
    assert {"rtf_test.beam1", "rtf_test.finetuned", "finetune_steps", "finetune_best_dev_wer"} <= set(
        run.data.metrics)
    assert run.data.metrics["finetune_steps"] == summary["steps"]


def test_finetuning_is_refused_where_it_cannot_run(tiny_cfg):
    tiny_cfg.baseline.finetune_minutes = 1.0
    tiny_cfg.recipe = "aac"
    with pytest.raises(ConfigError, match="baseline.finetune_minutes"):
        decode_baseline(tiny_cfg)  # before the baseline decodes anything
    assert not Path(tiny_cfg.baseline.dir).exists()
    tiny_cfg.recipe = "asr"
    tiny_cfg.encoder.layer = 1  # the cache would hold a middle layer, not what the decoder reads
    with pytest.raises(ConfigError, match="baseline.finetune_minutes.*layer=1"):
        wf.check_finetunable(tiny_cfg)


def test_results_table_and_breakdown_show_the_finetuned_row(tiny_cfg):
    cuts = list(load_cuts(tiny_cfg.corpus.dir, "test"))
    refs = {c.id: cut_text(c) for c in cuts}
    # the LLM right everywhere, Whisper as shipped wrong everywhere, fine-tuned right on half
    right_half = {c.id for c in cuts[: len(cuts) // 2]}
    files = {Path(tiny_cfg.decode.dir) / "test.beam1.jsonl": set(refs),
             Path(tiny_cfg.baseline.dir) / "test.beam1.jsonl": set(),
             Path(tiny_cfg.baseline.dir) / f"test.{wf.FINETUNED}.jsonl": right_half}  # fmt: skip
    for path, right in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"id": i, "ref": t, "hyp": t if i in right else "zzz"}) + "\n"
                                for i, t in refs.items()))  # fmt: skip
    tiny_cfg.score.reports = ["breakdown"]
    metrics = score(tiny_cfg)
    hyps = {i: t if i in right_half else "zzz" for i, t in refs.items()}
    expected = score_wer(refs, hyps)["summary"]["wer"]
    assert 0 < expected < 1 and metrics["whisper"][f"test.{wf.FINETUNED}"]["wer"] == pytest.approx(expected)
    table = (Path(tiny_cfg.score.dir) / "asr" / "results.md").read_text().splitlines()
    shipped = table.index("| Whisper (own decoder) | greedy | 100.0 |")
    finetuned = table.index(f"| {FINETUNED_ROW} | greedy | {100 * expected:.1f} |")
    assert finetuned == shipped + 1  # right after Whisper's own greedy row
    columns = json.loads((Path(tiny_cfg.score.dir) / "asr" / "breakdown.json").read_text())["test"]["columns"]
    headings = [c["heading"] for c in columns]
    assert headings[-2:] == ["Whisper (own decoder), greedy", f"{FINETUNED_ROW}, greedy"]
