"""What trains (prefix tuning, full fine-tuning, top encoder layers), saving it, loading it
back, exporting it with LoRA merged, and the `slam` command on the result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slam.cli import main as slam_cli
from slam.data.cache import build_cache
from slam.decode.hyps import read_hyps
from slam.decode.inference import EXPORT_MARKER, export_merged, load_trained
from slam.decode.stage import decode
from slam.model.speech_llm import ENCODER_WEIGHTS, FULL_LLM_DIR, SpeechLLM, build_speech_llm
from slam.model.tuning import uses_cache
from slam.registry import UnknownComponentError
from slam.train.loop import MODEL, make_optimizer, train
from slam.train.whisper_finetune import check_finetunable


def _dev_loss(cfg, model) -> float:
    """Loss of the model on a fixed random batch (same for every model of one config)."""
    torch.manual_seed(0)
    feats = torch.randn(2, 40, 80)
    lengths = torch.tensor([40, 25])
    targets = [[5, 6, 7, 8], [9, 10]]
    with torch.no_grad():
        return model(feats, lengths, targets, encoded=False)["loss"].item()


def _trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_unknown_tuning_method_lists_known(tiny_cfg):
    tiny_cfg.peft.method = "adapterz"
    with pytest.raises(UnknownComponentError, match="full, lora, none, prefix"):
        build_speech_llm(tiny_cfg, encoder_dim=32)


def test_prefix_tuning_trains_only_the_prefix_and_projector(tiny_cfg):
    tiny_cfg.peft.method = "prefix"
    tiny_cfg.peft.num_virtual_tokens = 3
    tiny_cfg.train.use_cache = False
    tiny_cfg.train.max_steps = 2
    before = build_speech_llm(tiny_cfg, with_encoder=True)
    names = _trainable_names(before)
    assert names and all(n.startswith(("projector.", "llm.prompt_encoder", "ctc_blank")) for n in names)
    assert before.prefix_length == 3
    train(tiny_cfg)
    cfg, trained = load_trained(Path(tiny_cfg.train.dir) / MODEL)
    assert cfg.peft.method == "prefix"
    # the learned prefix changes what the model computes, and it survives save + load
    assert _dev_loss(cfg, trained) != pytest.approx(_dev_loss(cfg, before), abs=1e-6)
    tiny_cfg.decode.num_beams = [1, 2]
    decode(tiny_cfg)
    assert len(read_hyps(Path(tiny_cfg.decode.dir) / "test.beam2.jsonl")) == 4
    with pytest.raises(ValueError, match="cannot be merged"):
        export_merged(Path(tiny_cfg.train.dir) / MODEL, Path(tiny_cfg.train.dir) / "export")


def test_a_model_directory_alone_loads_and_transcribes(tiny_cfg, tmp_path):
    """``SpeechLLM.from_pretrained`` needs the model directory and the zoo models it names,
    not the run that made it (its config, checkpoints and caches are gone here)."""
    tiny_cfg.train.max_steps = 3
    build_cache(tiny_cfg)
    train(tiny_cfg)
    shared = tmp_path / "shared-model"
    shutil.copytree(Path(tiny_cfg.train.dir) / MODEL, shared)
    shutil.rmtree(tiny_cfg.train.dir)
    shutil.rmtree(tiny_cfg.cache.dir)
    model = SpeechLLM.from_pretrained(shared)
    assert not model.training and model.config.projector == tiny_cfg.projector
    fresh = build_speech_llm(tiny_cfg, with_encoder=True).eval()
    # the trained weights came back
    assert _dev_loss(tiny_cfg, model) != pytest.approx(_dev_loss(tiny_cfg, fresh), abs=1e-6)
    model.save_pretrained(tmp_path / "again", mlflow_run_id=None)  # and saved again: the same model
    again = SpeechLLM.from_pretrained(tmp_path / "again")
    assert _dev_loss(tiny_cfg, again) == pytest.approx(_dev_loss(tiny_cfg, model), rel=1e-6)
    wavs = sorted((Path(tiny_cfg.corpus.dir) / "audio").glob("test-*.wav"))[:2]
    results = tmp_path / "hyps.jsonl"
    slam_cli(["transcribe", str(shared), *map(str, wavs), "--out", str(results)])
    assert len(results.read_text().splitlines()) == 2


def test_full_finetuning_saves_a_model_dir(tiny_cfg):
    tiny_cfg.peft.method = "full"
    tiny_cfg.train.max_steps = 2
    build_cache(tiny_cfg)
    train(tiny_cfg)
    assets = Path(tiny_cfg.train.dir) / MODEL
    assert (assets / FULL_LLM_DIR / "model.safetensors").exists()
    cfg, trained = load_trained(assets)
    fresh = build_speech_llm(cfg, with_encoder=True).eval()
    changed = [n for n, p in trained.llm.named_parameters()
               if not torch.equal(p, dict(fresh.llm.named_parameters())[n])]
    assert changed  # every LLM weight may train, and the trained ones come back on load


def test_top_encoder_layers_train_without_cache(tiny_cfg):
    tiny_cfg.train.encoder_layers = 1
    tiny_cfg.train.max_steps = 2
    info = build_cache(tiny_cfg)
    assert info["skipped"] == "the encoder trains" and info["sets"] == {}
    model = build_speech_llm(tiny_cfg)
    top = len(model.encoder.finetune_layers()) - 1
    encoder_trainable = {n for n in _trainable_names(model) if n.startswith("encoder.")}
    assert encoder_trainable and all(f"layers.{top}." in n for n in encoder_trainable)
    train(tiny_cfg)
    assets = Path(tiny_cfg.train.dir) / MODEL
    saved = load_file(str(assets / ENCODER_WEIGHTS))
    assert saved and all(f"layers.{top}." in n for n in saved)
    assert not json.loads((assets / "slam.json").read_text())["use_cache"]
    _, trained = load_trained(assets)
    for name, value in saved.items():
        torch.testing.assert_close(dict(trained.encoder.named_parameters())[name], value)
    decode(tiny_cfg)  # reads audio, runs the tuned encoder
    assert len(read_hyps(Path(tiny_cfg.decode.dir) / "test.beam1.jsonl")) == 4


def test_the_finetuned_whisper_baseline_keeps_the_cache_when_the_encoder_trains(tiny_cfg):
    tiny_cfg.train.encoder_layers = 1  # training reads audio ...
    tiny_cfg.baseline.finetune_minutes = 1.0  # ... the fine-tuned Whisper row reads the cache
    info = build_cache(tiny_cfg)
    assert "skipped" not in info and set(info["sets"]) >= {"train", "dev", "test"}
    assert not uses_cache(tiny_cfg)
    check_finetunable(tiny_cfg)  # no ConfigError


def test_opened_encoder_layers_get_their_own_rate(tiny_cfg):
    tiny_cfg.train.encoder_layers = 1
    tiny_cfg.train.encoder_lr = 3e-6
    model = build_speech_llm(tiny_cfg)
    groups = make_optimizer(model, tiny_cfg).param_groups
    by_rate = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    encoder = {id(p) for p in model.encoder.parameters() if p.requires_grad}
    assert by_rate[3e-6] == encoder  # the pretrained layers, and nothing else, at encoder_lr
    assert by_rate[tiny_cfg.train.lora_lr].isdisjoint(encoder)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_bad_encoder_layers_is_named(tiny_cfg):
    tiny_cfg.train.encoder_layers = 99
    with pytest.raises(ValueError, match="train.encoder_layers=99"):
        build_speech_llm(tiny_cfg)


def test_export_merges_lora_and_cli_transcribes(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 2
    tiny_cfg.peft.dropout = 0.0
    build_cache(tiny_cfg)
    train(tiny_cfg)
    assets = Path(tiny_cfg.train.dir) / MODEL
    (tmp_path / "exported").mkdir()  # an empty folder is fine
    out = export_merged(assets, tmp_path / "exported")
    assert (out / "llm" / "model.safetensors").exists() and not (out / "adapter").exists()
    assert (out / EXPORT_MARKER).is_file()
    assert export_merged(assets, out) == out and (out / EXPORT_MARKER).is_file()  # replaces its own export
    cfg, original = load_trained(assets)
    cfg_merged, merged = load_trained(out)
    assert cfg_merged.peft.method == "none"
    assert _dev_loss(cfg_merged, merged) == pytest.approx(_dev_loss(cfg, original), rel=1e-4)

    wavs = sorted((Path(tiny_cfg.corpus.dir) / "audio").glob("test-*.wav"))[:3]
    results = tmp_path / "hyps.jsonl"
    slam_cli(["transcribe", str(out), *map(str, wavs), "--out", str(results)])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(map(str, wavs))
    with pytest.raises(SystemExit):
        slam_cli(["transcribe", str(out), str(tmp_path / "missing.wav")])
