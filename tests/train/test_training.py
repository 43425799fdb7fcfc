"""Prompt/label masking, cache, training with resume, decoding and scoring on tiny models."""

from __future__ import annotations

import json
from collections import Counter
from functools import partial
from pathlib import Path

import pytest
import torch
from lhotse import CutSet
from safetensors.torch import load_file

from slam.config import ConfigError
from slam.data.cache import build_cache, load_cached_cuts
from slam.data.cuts import AudioTextDataset, cut_text
from slam.decode.hyps import read_hyps
from slam.decode.stage import decode, decode_baseline
from slam.model.speech_llm import IGNORE_INDEX, build_speech_llm
from slam.score.metrics.normalize import normalize
from slam.score.stage import score
from slam.train.loop import CHECKPOINTS, MODEL, ctc_warmup, train


def test_labels_cover_exactly_the_answer(tiny_cfg):
    model = build_speech_llm(tiny_cfg, encoder_dim=32)
    audio = torch.randn(2, 7, 32)
    targets = [[5, 6, 7], [8]]
    embeds, mask, labels = model.assemble(*model.projector(audio, torch.tensor([7, 3])), targets)
    prompt_len = len(model.prompt.prefix_ids) + len(model.prompt.suffix_ids)
    for i, (target, positions) in enumerate(zip(targets, [2, 1])):  # ceil(7/5), ceil(3/5)
        assert mask[i].sum() == prompt_len + positions + len(target) + 1
        assert labels[i][labels[i] != IGNORE_INDEX].tolist() == target + [model.prompt.eos_id]
    # training batches pad on the right: the first row is unpadded, the second ends in padding
    assert mask[1, -1] == 0 and mask[1, 0] == 1
    assert "<|im_start|>user" in model.tokenizer.decode(model.prompt.prefix_ids)


def test_generation_pads_left(tiny_cfg):
    model = build_speech_llm(tiny_cfg, encoder_dim=32)
    _, mask, _ = model.assemble(*model.projector(torch.randn(2, 10, 32), torch.tensor([10, 2])),
                                left_pad=True)
    assert mask[1, 0] == 0 and mask[1, -1] == 1 and mask[0].all()


def _trainable(cfg) -> dict[str, torch.Tensor]:
    ckpts = sorted((Path(cfg.train.dir) / CHECKPOINTS).glob("step-*"))
    return load_file(str(ckpts[-1] / "trainable.safetensors"))


class Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch, step: int) -> None:
    """Make training stop (as if killed) right after it checkpoints ``step``."""
    import slam.train.loop

    save = slam.train.loop.save_checkpoint

    def save_then_stop(directory, model, optimizer, scheduler, state):
        save(directory, model, optimizer, scheduler, state)
        if state["step"] == step:
            raise Interrupted

    monkeypatch.setattr(slam.train.loop, "save_checkpoint", save_then_stop)


def test_cache_train_resume_decode_score(tiny_cfg, tmp_path, monkeypatch, pinned):
    info = build_cache(tiny_cfg)
    assert info["sets"] == {"dev": 4, "test": 4, "train": 16} and info["dim"] == 32
    cut = next(iter(load_cached_cuts(tiny_cfg, "train")))
    # encoder output at 50 Hz of the true length, not of 30 s
    assert abs(cut.load_custom("encoder_out").shape[0] - 50 * cut.duration) <= 1

    # an interrupted run (stopped after its step-4 checkpoint) resumed to step 6 ...
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 4)
        with pytest.raises(Interrupted):
            train(tiny_cfg)
    summary = train(tiny_cfg)
    assert summary["steps"] == 6
    resumed = _trainable(tiny_cfg)
    # ... equals an uninterrupted run with the same seed
    fresh = tiny_cfg
    fresh.train.dir = str(tmp_path / "exp-fresh")
    train(fresh)
    for name, value in _trainable(fresh).items():
        torch.testing.assert_close(value, resumed[name], atol=1e-6, rtol=1e-5)

    assets = Path(fresh.train.dir) / MODEL
    assert (assets / "projector.safetensors").exists()
    assert (assets / "adapter" / "adapter_model.safetensors").exists()
    assert not list(assets.glob("*.bin")) and not list(assets.glob("model.safetensors"))

    fresh.decode.num_beams = [1, 2]
    decode(fresh)
    decode_baseline(fresh)
    hyps = read_hyps(Path(fresh.decode.dir) / "test.beam2.jsonl")
    assert sorted(h["id"] for h in hyps) == sorted(c.id for c in load_cached_cuts(fresh, "test"))
    metrics = score(fresh)
    assert set(metrics) == {"llm", "whisper"}
    assert set(metrics["llm"]) == {"test.beam1", "test.beam2"}
    assert metrics["llm"]["test.beam1"]["utterances"] == 4
    pinned("asr", {"train": summary, "score": metrics})
    table = (Path(fresh.score.dir) / "asr" / "results.md").read_text()
    assert "Whisper (own decoder)" in table and "beam 2" in table
    curve = (Path(fresh.score.dir) / "asr" / "train_curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 6  # header + one row per logged step
    assert json.loads((Path(fresh.score.dir) / "asr" / "train.json").read_text())["steps"] == 6


def test_cache_refuses_other_encoder(tiny_cfg):
    build_cache(tiny_cfg)
    tiny_cfg.encoder.layer = 1
    with pytest.raises(ValueError, match="rerun the cache stage"):
        load_cached_cuts(tiny_cfg, "train")


def test_cache_from_before_a_setting_existed_counts_as_built_with_its_default(tiny_cfg):
    build_cache(tiny_cfg)
    info_path = Path(tiny_cfg.cache.dir) / "info.json"
    info = json.loads(info_path.read_text())
    del info["encoder"]["context_seconds"]
    info_path.write_text(json.dumps(info))
    assert len(load_cached_cuts(tiny_cfg, "train")) > 0
    tiny_cfg.encoder.context_seconds = 10.0
    with pytest.raises(ValueError, match="rerun the cache stage"):
        load_cached_cuts(tiny_cfg, "train")


def test_encoder_inside_the_step(tiny_cfg):
    """train.use_cache=false: no cache needed; the encoder runs in each step, frozen."""
    tiny_cfg.train.use_cache = False
    tiny_cfg.train.max_steps = 2
    tiny_cfg.train.dev_wer_cuts = 3  # greedy dev WER at each evaluation, from raw audio here
    summary = train(tiny_cfg)
    assert summary["steps"] == 2
    curve = (Path(tiny_cfg.score.dir) / "asr" / "dev_curve.csv").read_text().splitlines()
    assert curve[0].split(",")[-1] == "dev_wer" and len(curve) == 2  # header + the eval at step 2
    assert float(curve[1].split(",")[-1]) == summary["dev_wer"] >= 0
    assert not Path(tiny_cfg.cache.dir).exists()
    trained = _trainable(tiny_cfg)
    assert trained and not any(name.startswith("encoder.") for name in trained)
    decode(tiny_cfg)
    assert len(read_hyps(Path(tiny_cfg.decode.dir) / "test.beam1.jsonl")) == 4


def test_ctc_restricted_to_the_training_tokens(tiny_cfg):
    tiny_cfg.train.ctc_weight = 1.0
    model = build_speech_llm(tiny_cfg, encoder_dim=32)
    torch.manual_seed(0)
    model.ctc_blank.data.normal_()
    audio, lengths = model.projector(torch.randn(2, 40, 32), torch.tensor([40, 25]))
    targets = [[5, 6, 7], [8, 5]]
    full = model.ctc_loss(audio, lengths, targets)
    model.restrict_ctc(range(len(model.tokenizer)))  # every token: the same loss
    torch.testing.assert_close(model.ctc_loss(audio, lengths, targets), full)
    model.restrict_ctc([9, 8, 7, 6, 5, 5])  # fewer competitors: each target is likelier
    assert model.ctc_loss(audio, lengths, targets) < full
    with pytest.raises(ValueError, match="outside the classes"):
        model.ctc_loss(audio, lengths, [[5, 6, 11]])


def test_a_rare_token_is_spelled_in_the_ctc_targets(tiny_cfg):
    """train.ctc_min_count: a token rarer than that gets no class; its characters do, and its
    CTC target is those characters, so the loss is the loss of the spelled transcript."""
    tiny_cfg.train.ctc_weight = 1.0
    model = build_speech_llm(tiny_cfg, encoder_dim=32)
    tok = model.tokenizer
    common, rare = ([t] for t in tok.convert_tokens_to_ids(["Ġthe", "udio"]))  # tokens of the tiny BPE
    chars = tok.convert_tokens_to_ids(list(tok.convert_ids_to_tokens(rare[0])))
    model.restrict_ctc(Counter({common[0]: 5, rare[0]: 1}), min_count=2)
    assert rare[0] not in model.ctc_class_ids().tolist() and set(chars) <= set(model.ctc_class_ids().tolist())
    torch.manual_seed(0)
    model.ctc_blank.data.normal_()
    audio, lengths = model.projector(torch.randn(1, 60, 32), torch.tensor([60]))
    torch.testing.assert_close(model.ctc_loss(audio, lengths, [common + rare]),
                               model.ctc_loss(audio, lengths, [common + chars]))  # fmt: skip
    model.restrict_ctc(Counter({common[0]: 5, rare[0]: 1}), min_count=1)  # the default: every token a class
    assert rare[0] in model.ctc_class_ids().tolist() and len(model.ctc_class_ids()) == 2


def test_ctc_warmup_moves_only_the_projector_and_is_not_repeated_on_resume(tiny_cfg, monkeypatch):
    build_cache(tiny_cfg)
    tiny_cfg.train.ctc_weight = 1.0
    tiny_cfg.train.ctc_warmup_steps = 30
    tiny_cfg.train.ctc_warmup_max_duration = 30.0
    model = build_speech_llm(tiny_cfg, encoder_dim=32).train()
    cuts = load_cached_cuts(tiny_cfg, "train")
    dataset = AudioTextDataset(model.tokenizer)
    model.restrict_ctc(t for c in cuts for t in dataset.tokenize(cut_text(c)))
    batch = dataset[cuts]

    def ctc() -> float:
        with torch.no_grad():
            return model.ctc_loss(*model.audio_embeddings(batch["inputs"], batch["lengths"], True),
                                  batch["targets"]).item()

    before_loss = ctc()
    before = {n: p.detach().clone() for n, p in model.trainable_state().items()}
    result = ctc_warmup(model, cuts, dataset, tiny_cfg, torch.device("cpu"))
    assert result["steps"] == 30 and ctc() < 0.8 * before_loss
    changed = {n for n, p in model.trainable_state().items() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("projector.", "ctc_blank")) for n in changed)

    # the train stage warms up once; a resumed run starts from the checkpoint that holds it
    tiny_cfg.train.max_steps = 4
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 0)  # killed right after the warm-up
        with pytest.raises(Interrupted):
            train(tiny_cfg)
    monkeypatch.setattr("slam.train.loop.ctc_warmup", lambda *a, **k: pytest.fail("warm-up repeated"))
    summary = train(tiny_cfg)
    assert summary["steps"] == 4 and summary["ctc_warmup_steps"] == 30


def test_answer_normalizer_shapes_what_the_llm_and_the_ctc_head_learn(tiny_cfg, monkeypatch):
    """``train.answer_normalizer``: the answers (LLM targets) and the CTC classes come from the
    normalised transcript; the references the model is scored against stay as they were."""
    build_cache(tiny_cfg)
    model = build_speech_llm(tiny_cfg, encoder_dim=32)
    cuts = load_cached_cuts(tiny_cfg, "train")
    cut = next(iter(cuts))
    cut.supervisions[0].text = "Speed-dial, O'Brien."
    verbatim = AudioTextDataset(model.tokenizer)
    plain = AudioTextDataset(model.tokenizer, answer_text=partial(normalize, name="words_v1"))
    batch = plain[CutSet.from_cuts([cut])]
    assert batch["texts"] == ["speed dial o'brien"]
    assert verbatim[CutSet.from_cuts([cut])]["texts"] == ["Speed-dial, O'Brien."]
    assert batch["targets"] == [model.tokenizer("speed dial o'brien", add_special_tokens=False).input_ids]
    assert set(plain.token_counts([cut])) == set(batch["targets"][0]) != set(verbatim.token_counts([cut]))

    made = []  # the train stage gives its training and dev rows the configured normaliser
    tiny_cfg.train.answer_normalizer, tiny_cfg.train.max_steps = "words_v1", 1

    def recording(*args, **kwargs):
        made.append(AudioTextDataset(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr("slam.train.loop.AudioTextDataset", recording)
    train(tiny_cfg)
    assert len(made) == 2 and all(d.transcript(cut) == "speed dial o'brien" for d in made)


def test_checkpoints_hold_only_trainable_weights_when_embeddings_are_tied(tiny_cfg, tmp_path):
    """A tied output layer is the frozen token embeddings under a second name: it stays out of
    checkpoints, and one that carries it (written by an earlier version) still resumes."""
    from safetensors.torch import save_file

    from slam.testing import save_tiny_llm
    from slam.train.loop import TRAINABLE

    tiny_cfg.llm.path = str(save_tiny_llm(tmp_path / "tied-llm", tie_embeddings=True))
    tiny_cfg.train.max_steps, tiny_cfg.train.checkpoint_every, tiny_cfg.train.eval_every = 2, 1, 100
    build_cache(tiny_cfg)
    train(tiny_cfg)
    ckpt = sorted((Path(tiny_cfg.train.dir) / CHECKPOINTS).glob("step-*"))[-1]
    weights = load_file(str(ckpt / TRAINABLE))
    model = build_speech_llm(tiny_cfg, encoder_dim=32)
    assert set(weights) == set(model.trainable_state())
    head = next(k for k in model.state_dict() if "lm_head" in k)
    assert head not in weights
    save_file({**weights, head: model.state_dict()[head].contiguous()}, str(ckpt / TRAINABLE))
    tiny_cfg.train.max_steps = 3
    assert train(tiny_cfg)["steps"] == 3


@pytest.mark.parametrize("native", [True, False])
def test_bf16_autocast_only_where_the_cpu_computes_bf16(tiny_cfg, monkeypatch, caplog, native):
    """Emulated bf16 is ~200x slower than fp32 on AVX2-only CPUs: there bf16 runs fp32, loudly."""
    import slam.utils as utils

    monkeypatch.setattr(utils, "cpu_has_native_bf16", lambda: native)
    utils._warn_emulated_bf16.cache_clear()
    tiny_cfg.runtime.precision = "bf16"
    cpu = torch.device("cpu")
    with caplog.at_level("WARNING", logger="slam.utils"), utils.autocast(tiny_cfg.runtime, cpu):
        out = torch.randn(4, 8) @ torch.randn(8, 4)
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    assert ("no native bf16" in caplog.text) != native
    tiny_cfg.runtime.precision = "fp32"
    assert utils.autocast_dtype(tiny_cfg.runtime, cpu) is None
    tiny_cfg.runtime.precision = "bf17"
    with pytest.raises(ValueError, match="runtime.precision='bf17'"):
        utils.autocast_dtype(tiny_cfg.runtime, cpu)


def test_keeps_the_checkpoint_with_the_lowest_dev_wer_and_decodes_jointly(tiny_cfg, monkeypatch):
    """With dev WER at every evaluation, the saved model is the best evaluated step's, not the
    last; decoding then adds the CTC head's own reading and can run joint CTC/LLM search."""
    import slam.train.loop

    build_cache(tiny_cfg)
    tiny_cfg.train.ctc_weight = 0.5
    tiny_cfg.train.eval_every = 2
    tiny_cfg.train.dev_wer_cuts = 2
    dev_wers = iter([0.9, 0.4, 0.7])  # steps 2, 4, 6: step 4 is the best
    evaluate = slam.train.loop.evaluate

    def scripted(*args, **kwargs):
        return {**evaluate(*args, **kwargs), "dev_wer": next(dev_wers)}

    kept = {}
    save_best = slam.train.loop.save_best

    def remember(directory, model, state):
        weights = slam.train.loop.unwrap(model).trainable_state()
        kept[state["best_step"]] = {k: v.detach().clone() for k, v in weights.items()}
        save_best(directory, model, state)

    monkeypatch.setattr(slam.train.loop, "evaluate", scripted)
    monkeypatch.setattr(slam.train.loop, "save_best", remember)
    summary = train(tiny_cfg)
    assert summary["best_step"] == 4 and summary["best_dev_wer"] == 0.4 and sorted(kept) == [2, 4]
    saved = load_file(str(Path(tiny_cfg.train.dir) / MODEL / "projector.safetensors"))
    for name, value in saved.items():
        torch.testing.assert_close(value, kept[4][f"projector.{name}"].float())
    assert not torch.equal(kept[4]["projector.net.0.weight"], _trainable(tiny_cfg)["projector.net.0.weight"])

    tiny_cfg.decode.ctc_weight = 0.3
    decode(tiny_cfg)
    hyp_files = sorted(p.name for p in Path(tiny_cfg.decode.dir).glob("*.jsonl"))
    assert hyp_files == ["test.beam1.jsonl", "test.ctc.jsonl"]
    table = score(tiny_cfg) and (Path(tiny_cfg.score.dir) / "asr" / "results.md").read_text()
    assert "CTC head of the projector, alone" in table


def test_dev_set_is_the_set_the_dev_metrics_are_measured_on(tiny_cfg, monkeypatch):
    """``train.dev_set`` names the held-out set (e.g. a real set's dev part); a set the cache
    does not hold is refused by its key before any training."""
    import slam.train.loop

    build_cache(tiny_cfg)
    tiny_cfg.train.dev_set = "asterisk_en_dev"
    with pytest.raises(ConfigError, match=r"dev_set .asterisk_en_dev. is not a held-out set.*dev, test"):
        train(tiny_cfg)
    assert not Path(tiny_cfg.train.dir, MODEL).exists()
    tiny_cfg.train.dev_set, tiny_cfg.train.max_steps, tiny_cfg.train.eval_every = "test", 2, 2
    measured = []
    evaluate = slam.train.loop.evaluate

    def spy(model, dev_batches, *args, **kwargs):
        measured.extend(cut.id for batch in dev_batches for cut in batch)
        return evaluate(model, dev_batches, *args, **kwargs)

    monkeypatch.setattr(slam.train.loop, "evaluate", spy)
    train(tiny_cfg)
    test_ids = {cut.id for cut in load_cached_cuts(tiny_cfg, "test")}
    assert measured and set(measured) <= test_ids


def test_spec_augment_masks_encoder_outputs_in_training_only(tiny_cfg):
    tiny_cfg.train.spec_time_masks, tiny_cfg.train.spec_time_width = 2, 10
    tiny_cfg.train.spec_feature_masks, tiny_cfg.train.spec_feature_width = 2, 4
    model = build_speech_llm(tiny_cfg, encoder_dim=32).train()
    torch.manual_seed(0)  # a span may be drawn 0 wide; this seed draws none
    frames = torch.randn(3, 100, 32) + 5.0  # no zeros of its own
    masked = model.augment(frames)
    for row in masked:
        silent_frames = int((row == 0).all(dim=1).sum())
        silent_channels = int((row == 0).all(dim=0).sum())
        assert 0 < silent_frames <= 20 and silent_channels <= 8  # two spans of <= 10 frames / 4 dims
    assert not torch.equal(masked[0] == 0, masked[1] == 0)  # each row its own spans
    lengths = torch.tensor([100, 100, 100])
    first, _ = model.audio_embeddings(frames, lengths, encoded=True)
    second, _ = model.audio_embeddings(frames, lengths, encoded=True)
    assert not torch.equal(first, second)
    model.eval()
    assert torch.equal(model.augment(frames), frames)
    assert torch.equal(*(model.audio_embeddings(frames, lengths, encoded=True)[0] for _ in range(2)))


def test_init_from_starts_from_a_trained_model_and_keys_its_weights(tiny_cfg, tmp_path):
    """``train.init_from``: a recipe built on a trained model starts from its weights; the run
    key follows the weights, and a model of other settings or no model stops with the key named."""
    import copy

    import mlflow

    from slam.model.speech_llm import init_from_trained
    from slam.train.loop import run_key

    build_cache(tiny_cfg)
    tiny_cfg.train.max_steps = tiny_cfg.train.checkpoint_every = 2
    train(tiny_cfg)
    source = Path(tiny_cfg.train.dir) / MODEL
    trained = build_speech_llm(tiny_cfg, encoder_dim=32)
    scratch = {n: p.detach().clone() for n, p in trained.trainable_state().items()}

    cfg = copy.deepcopy(tiny_cfg)
    cfg.train.dir, cfg.train.init_from = str(tmp_path / "exp-on-top"), str(source)
    digest = init_from_trained(trained, cfg)
    weights = trained.trainable_state()
    assert any(not torch.equal(weights[n], scratch[n]) for n in scratch)  # it moved off its init
    saved = load_file(str(source / "projector.safetensors"))
    for name, value in saved.items():
        torch.testing.assert_close(weights[f"projector.{name}"], value)
    assert run_key(cfg) != run_key(tiny_cfg)
    summary = train(cfg)
    assert summary["steps"] == 2
    run = mlflow.MlflowClient().get_run(json.loads((Path(cfg.train.dir) / MODEL / "slam.json").read_text())
                                        ["mlflow_run_id"])  # fmt: skip
    assert run.data.params["init_digest"] == digest
    # new weights under the same path: another run (no resume of the old one's checkpoints)
    before = run_key(cfg)
    tiny_cfg.train.max_steps = 4
    train(tiny_cfg)
    assert run_key(cfg) != before

    other = copy.deepcopy(cfg)
    other.projector.hidden = 32
    named = r"train.init_from: .* other projector.hidden \(projector.hidden=64\)"
    with pytest.raises(ConfigError, match=named):
        init_from_trained(build_speech_llm(other, encoder_dim=32), other)
    other = copy.deepcopy(cfg)
    other.train.init_from = str(tmp_path / "no-model")
    with pytest.raises(ConfigError, match="train.init_from: .*no-model is not a trained model directory"):
        train(other)


def test_lr_restarts_follow_a_run_resumed_with_more_steps(tiny_cfg):
    """``train.lr_restarts``: a run of 2000 steps restarting at 1000 follows a 1000-step run's
    schedule to step 1000, then the schedule a 2000-step run has from there (what resuming the
    1000-step run with ``max_steps=2000`` gave JOIN2000); bad steps are named."""
    import copy

    from slam.train.loop import lr_lambda, run_key

    tc = tiny_cfg.train
    tc.warmup_steps, tc.decay_fraction, tc.min_lr_ratio = 50, 0.3, 0.1
    tc.max_steps = 1000
    short = lr_lambda(tiny_cfg)
    tc.max_steps = 2000
    long = lr_lambda(tiny_cfg)
    plain_key = run_key(tiny_cfg)
    tc.lr_restarts = [1000]
    restarted = lr_lambda(tiny_cfg)
    assert [restarted(s) for s in range(1000)] == [short(s) for s in range(1000)]
    assert [restarted(s) for s in range(1000, 2001)] == [long(s) for s in range(1000, 2001)]
    assert restarted(999) == pytest.approx(0.1, abs=1e-3) and restarted(1000) == restarted(1399) == 1.0
    assert restarted(2000) == pytest.approx(0.1)
    assert run_key(tiny_cfg) != plain_key  # another schedule: another run
    for bad in ([1000, 1000], [1500, 1000], [0], [2000]):
        cfg = copy.deepcopy(tiny_cfg)
        cfg.train.lr_restarts = bad
        with pytest.raises(ValueError, match="train.lr_restarts"):
            lr_lambda(cfg)


def test_a_corpus_setting_left_off_keeps_the_run_key_a_set_one_changes_it(tiny_cfg):
    """Checkpoints of runs from before ``corpus.message_utterances`` existed still resume; a
    corpus with messages is another run."""
    from slam.train.loop import run_key

    key = run_key(tiny_cfg)
    for added in ("message_utterances", "spoken_form_utterances"):
        setattr(tiny_cfg.corpus, added, 300)
        assert run_key(tiny_cfg) != key
        setattr(tiny_cfg.corpus, added, 0)
        assert run_key(tiny_cfg) == key
