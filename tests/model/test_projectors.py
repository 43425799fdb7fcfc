"""Every registered projector: output lengths, padding invariance, gradients, save/load, config errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from slam.compose import compose_params
from slam.config import ProjectorConfig, to_config
from slam.model.projectors import PROJECTORS, build_projector, load_projector, save_projector

ROOT = Path(__file__).resolve().parents[2]
IN_DIM, OUT_DIM = 8, 12
# Small enough that every Q-Former case runs in milliseconds.
SMALL = ProjectorConfig(hidden=16, qformer_layers=1, qformer_heads=2, qformer_hidden=16)
CASES = [
    replace(SMALL, name="linear", k=1),
    replace(SMALL, name="linear", k=5),
    replace(SMALL, name="conv1d", k=1),
    replace(SMALL, name="conv1d", k=3),
    replace(SMALL, name="conv1d", k=5),
    replace(SMALL, name="qformer", num_queries=1),
    replace(SMALL, name="qformer", num_queries=4),
    replace(SMALL, name="window_qformer", window=1, num_queries=1),
    replace(SMALL, name="window_qformer", window=4, num_queries=2),
    replace(SMALL, name="window_qformer", window=17, num_queries=1),
]
FRAMES = [1, 2, 3, 4, 5, 7, 16, 17, 18, 35]


def case_id(cfg: ProjectorConfig) -> str:
    return f"{cfg.name}-k{cfg.k}-w{cfg.window}-q{cfg.num_queries}"


def expected_length(cfg: ProjectorConfig, frames: int) -> int:
    """The interface's contract, written out independently of the implementations."""
    if frames == 0:
        return 0
    if cfg.name in ("linear", "conv1d"):
        return -(-frames // cfg.k)
    if cfg.name == "qformer":
        return cfg.num_queries
    return -(-frames // cfg.window) * cfg.num_queries


def make(cfg: ProjectorConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_projector(cfg, IN_DIM, OUT_DIM).eval()  # eval: no Q-Former dropout


def test_every_projector_is_tested_and_has_a_params_file():
    assert sorted({c.name for c in CASES}) == PROJECTORS.names()
    for name in PROJECTORS.names():
        composed = yaml.safe_load(compose_params([f"projector={name}"], ROOT / "params"))
        assert composed["projector"]["name"] == name
        cfg = to_config(composed).projector
        build_projector(cfg, IN_DIM, OUT_DIM)  # the shipped sizes are valid


@pytest.mark.parametrize("cfg", CASES, ids=case_id)
def test_shapes_and_lengths(cfg):
    projector = make(cfg)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for frames in FRAMES:
            others = torch.randint(1, frames + 1, (2,), generator=generator).tolist()
            lengths = torch.tensor([frames, *others])
            y, out_lengths = projector(torch.randn(3, frames, IN_DIM), lengths)
            want = [expected_length(cfg, n) for n in lengths.tolist()]
            assert out_lengths.tolist() == want, frames
            assert projector.output_lengths(lengths).tolist() == want
            assert y.shape == (3, expected_length(cfg, frames), OUT_DIM), frames
            assert torch.isfinite(y).all()
    rate = {"linear": 50 / cfg.k, "conv1d": 50 / cfg.k, "qformer": 0.0}
    assert projector.output_rate(50.0) == pytest.approx(
        rate.get(cfg.name, 50 / cfg.window * cfg.num_queries)
    )


@pytest.mark.parametrize("cfg", CASES, ids=case_id)
def test_padding_never_reaches_valid_outputs(cfg):
    projector = make(cfg)
    lengths = torch.tensor([23, 1, 17, 6, 40])
    x = torch.randn(len(lengths), int(lengths.max()), IN_DIM)
    for i, n in enumerate(lengths.tolist()):  # garbage, even NaN, past each length
        x[i, n:] = 1e4 * torch.randn_like(x[i, n:])
        x[i, n + 1 :: 3] = float("nan")
    with torch.no_grad():
        batched, batch_lengths = projector(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone, alone_lengths = projector(x[i : i + 1, :n], lengths[i : i + 1])
            m = int(alone_lengths[0])
            assert m == batch_lengths[i] and alone.shape[1] == m
            torch.testing.assert_close(batched[i, :m], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(batched).all()


@pytest.mark.parametrize("cfg", CASES, ids=case_id)
def test_empty_item_gets_no_positions(cfg):
    """A zero-length row (or windows wholly past a row's end) must not produce NaN."""
    projector = make(cfg)
    lengths = torch.tensor([9, 0])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # as the recipes run
        y, out_lengths = projector(torch.randn(2, 9, IN_DIM), lengths)
    assert out_lengths.tolist() == [expected_length(cfg, 9), 0]
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("cfg", CASES, ids=case_id)
def test_gradients_reach_every_parameter(cfg):
    projector = make(cfg).train()
    lengths = torch.tensor([11, 3])
    x = torch.randn(2, 11, IN_DIM)
    x[1, 3:] = float("nan")
    y, out_lengths = projector(x, lengths)
    # A random weighting: a plain sum has no gradient through a final LayerNorm.
    weights = torch.randn_like(y)
    loss = sum((y[i, :n] * weights[i, :n]).sum() for i, n in enumerate(out_lengths.tolist()))
    loss.backward()
    # Attention over a single key is a constant 1, so its query and key maps get no gradient:
    # self-attention with one query, cross-attention over one-frame windows.
    single = []
    if cfg.name in ("qformer", "window_qformer") and cfg.num_queries == 1:
        single.append(".attention.attention.")
    if cfg.name == "window_qformer" and cfg.window == 1:
        single.append(".crossattention.attention.")
    for name, param in projector.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        if not any(s in name and name.split(".")[-2] in ("query", "key") for s in single):
            assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cfg", CASES, ids=case_id)
def test_save_load_roundtrip(cfg, tmp_path):
    projector = make(cfg, seed=3)
    save_projector(projector, tmp_path)
    loaded = load_projector(tmp_path).eval()
    assert type(loaded) is type(projector) and loaded.cfg == cfg
    x, lengths = torch.randn(2, 21, IN_DIM), torch.tensor([21, 8])
    with torch.no_grad():
        ours, theirs = projector(x, lengths), loaded(x, lengths)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


@pytest.mark.parametrize(
    "name,change,message",
    [
        ("linear", {"k": 0}, "projector.k must be >= 1"),
        ("conv1d", {"k": 0}, "projector.k must be >= 1"),
        ("qformer", {"num_queries": 0}, "projector.num_queries must be >= 1"),
        ("qformer", {"qformer_layers": 0}, "projector.qformer_layers must be >= 1"),
        ("qformer", {"qformer_heads": 3}, r"projector.qformer_hidden \(16\) must be divisible by "
                                          r"projector.qformer_heads \(3\)"),
        ("window_qformer", {"window": 0}, "projector.window must be >= 1"),
        ("window_qformer", {"num_queries": -1}, "projector.num_queries must be >= 1"),
        ("window_qformer", {"qformer_heads": 0}, "projector.qformer_heads must be >= 1"),
    ],
)
def test_bad_values_name_the_key(name, change, message):
    with pytest.raises(ValueError, match=message):
        build_projector(replace(SMALL, name=name, **change), IN_DIM, OUT_DIM)


def test_window_qformer_is_the_qformer_on_each_window():
    """Each window's queries see exactly that window's valid frames, the last one included."""
    cfg = replace(SMALL, name="window_qformer", window=4, num_queries=2)
    windowed = make(cfg)
    whole = build_projector(replace(cfg, name="qformer"), IN_DIM, OUT_DIM).eval()
    whole.load_state_dict(windowed.state_dict())
    x = torch.randn(1, 10, IN_DIM)
    with torch.no_grad():
        y, _ = windowed(x, torch.tensor([10]))
        parts = [whole(x[:, s : s + 4], torch.tensor([min(4, 10 - s)]))[0] for s in range(0, 10, 4)]
    torch.testing.assert_close(y, torch.cat(parts, dim=1), atol=1e-5, rtol=1e-5)


# -- what the LLM reads of the projection (projector.posterior_inputs, projector.blank_skip) ------
def _model_with_head(cfg, blank_and_rest: torch.Tensor | None = None):
    """The tiny model with a CTC head over three token classes; ``blank_and_rest`` ([..., 4]:
    classes 0-2, then blank) fixes the head's reading."""
    from slam.model.speech_llm import build_speech_llm

    cfg.train.ctc_weight = 1.0
    model = build_speech_llm(cfg, encoder_dim=32).eval()
    model.restrict_ctc(model.tokenizer("the quick fox", add_special_tokens=False).input_ids[:3])
    assert len(model.ctc_class_ids()) == 3
    if blank_and_rest is not None:
        model.ctc_log_probs = lambda audio: (blank_and_rest + 1e-12).log()
    return model


def test_posterior_inputs_are_the_heads_expected_token_embeddings(tiny_cfg) -> None:
    tiny_cfg.projector.posterior_inputs = True
    probs = torch.tensor([[[0.7, 0.2, 0.05, 0.05], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]]])
    model = _model_with_head(tiny_cfg, probs)
    table = model.ctc_table()
    audio = torch.randn(1, 3, table.shape[1])
    embeds, lengths = model.llm_audio(audio, torch.tensor([3]))
    assert lengths.tolist() == [3]
    torch.testing.assert_close(embeds, probs @ table, atol=1e-5, rtol=1e-5)
    # a position read as a token with certainty is that token's own embedding, as the LLM knows it
    token = model.ctc_class_ids()[2]
    torch.testing.assert_close(embeds[0, 2], model.llm.get_input_embeddings()(token[None])[0].detach())
    torch.testing.assert_close(embeds[0, 1], model.ctc_blank.detach())


def test_blank_skip_keeps_the_positions_the_head_does_not_call_blank(tiny_cfg) -> None:
    tiny_cfg.projector.blank_skip = 0.5
    blank = torch.tensor([[0.9, 0.1, 0.95, 0.2, 0.0], [0.99, 0.6, 0.7, 0.0, 0.0]])  # row 1: 3 frames
    probs = torch.stack([(1 - blank) / 3] * 3 + [blank], dim=-1)
    model = _model_with_head(tiny_cfg, probs)
    audio = torch.arange(2 * 5, dtype=torch.float)[:, None].expand(-1, 4).reshape(2, 5, 4)
    kept, lengths = model.llm_audio(audio, torch.tensor([4, 3]))
    assert lengths.tolist() == [2, 1]
    torch.testing.assert_close(kept[0], audio[0, [1, 3]])  # frame 4 is padding: never kept
    torch.testing.assert_close(kept[1, :1], audio[1, [1]])  # all blank: the least blank frame stays


def test_posterior_inputs_train_the_projector_through_the_llm_loss(tiny_cfg) -> None:
    tiny_cfg.projector.posterior_inputs, tiny_cfg.projector.blank_skip = True, 0.9
    model = _model_with_head(tiny_cfg).train()
    model.ctc_in_step = False  # only the LLM's loss: its gradient must reach the projector
    targets = [model.tokenizer("the quick fox", add_special_tokens=False).input_ids] * 2
    out = model(torch.randn(2, 20, 32), torch.tensor([20, 12]), targets)
    out["loss"].backward()
    grads = [p.grad for p in model.projector.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_posterior_inputs_need_the_ctc_head(tiny_cfg) -> None:
    from slam.config import ConfigError
    from slam.model.speech_llm import build_speech_llm

    tiny_cfg.projector.posterior_inputs = True
    tiny_cfg.train.ctc_weight, tiny_cfg.train.ctc_warmup_steps = 0.0, 0
    with pytest.raises(ConfigError, match="projector.posterior_inputs"):
        build_speech_llm(tiny_cfg, encoder_dim=32)
    with pytest.raises(ValueError, match="projector.blank_skip"):
        to_config({"projector": {"blank_skip": 1.5}})


def test_utterance_norm_takes_out_what_a_recording_shares(tiny_cfg) -> None:
    """Each row is normalised over its own frames: a per-recording offset and gain on every
    channel (a speaker's or channel's constant colouring) gives the same projector input, and a
    padded row equals the row alone."""
    from slam.model.speech_llm import build_speech_llm, normalise_utterances

    torch.manual_seed(0)
    speech = torch.randn(1, 7, 32)
    coloured = speech * (0.5 + 3 * torch.rand(32)) + torch.randn(32) * 5
    padded = torch.cat([coloured, torch.zeros(1, 3, 32)], dim=1)
    both = normalise_utterances(torch.cat([torch.cat([speech, torch.zeros(1, 3, 32)], 1), padded]),
                                torch.tensor([7, 7]))
    torch.testing.assert_close(both[0], both[1], atol=1e-4, rtol=1e-4)
    assert both[:, 7:].abs().sum() == 0  # padding stays empty
    torch.testing.assert_close(both[0, :7], normalise_utterances(speech, torch.tensor([7]))[0])
    assert float(both[0, :7].mean(0).abs().max()) < 1e-5
    assert float((both[0, :7].std(0, unbiased=False) - 1).abs().max()) < 1e-3

    tiny_cfg.projector.utterance_norm = True
    model = build_speech_llm(tiny_cfg, encoder_dim=32).eval()
    plain, _ = model.audio_embeddings(torch.cat([speech, torch.zeros(1, 3, 32)], 1), torch.tensor([7]), True)
    moved, _ = model.audio_embeddings(padded, torch.tensor([7]), True)
    torch.testing.assert_close(plain, moved, atol=1e-4, rtol=1e-4)
