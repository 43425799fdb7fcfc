"""Every encoder family x projector x LLM family, built from tiny configs: one training step
and one ``generate``, with the shapes the config implies."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from slam.config import SlamConfig
from slam.model.projectors import PROJECTORS
from slam.model.speech_llm import IGNORE_INDEX, build_speech_llm
from slam.testing import save_tiny_causal_lm, save_tiny_llm, save_tiny_whisper
from slam.testing_encoders import TINY_ENCODERS

ENCODERS = {"whisper": save_tiny_whisper, **TINY_ENCODERS}
LLMS = {
    "llama": save_tiny_llm,  # chat template (SmolLM2-like)
    "qwen2": lambda d: save_tiny_causal_lm(d, "qwen2"),  # chat template
    "gemma3": lambda d: save_tiny_causal_lm(d, "gemma3"),  # base model: plain prompt
}
DURATIONS = [1.0, 0.6]  # seconds; the batch is padded to the longer one


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("combos")
    dirs = {f"enc:{name}": build(root / f"enc-{name}") for name, build in ENCODERS.items()}
    dirs |= {f"llm:{name}": build(root / f"llm-{name}") for name, build in LLMS.items()}
    return dirs


def make_config(model_dirs, encoder: str, projector: str, llm: str) -> SlamConfig:
    cfg = SlamConfig()
    cfg.encoder.name, cfg.encoder.path = encoder, str(model_dirs[f"enc:{encoder}"])
    cfg.llm.path = str(model_dirs[f"llm:{llm}"])
    cfg.llm.chat_template = llm != "gemma3"
    p = cfg.projector
    p.name, p.k, p.hidden = projector, 3, 32
    p.num_queries, p.window, p.qformer_layers, p.qformer_heads, p.qformer_hidden = 2, 4, 1, 2, 16
    cfg.peft.r = 2
    cfg.train.ctc_weight = 0.5
    return cfg


def expected_positions(encoder, cfg: SlamConfig, frames: int) -> int:
    """What the config says the projector makes of ``frames`` encoder frames."""
    p = cfg.projector
    return {
        "linear": math.ceil(frames / p.k),
        "conv1d": math.ceil(frames / p.k),
        "qformer": p.num_queries,
        "window_qformer": math.ceil(frames / p.window) * p.num_queries,
    }[p.name]


@pytest.mark.parametrize("llm", sorted(LLMS))
@pytest.mark.parametrize("projector", PROJECTORS.names())
@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_train_step_and_generate(model_dirs, encoder, projector, llm):
    cfg = make_config(model_dirs, encoder, projector, llm)
    torch.manual_seed(0)
    model = build_speech_llm(cfg, with_encoder=True).train()
    enc = model.encoder
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(int(d * enc.sample_rate)).astype(np.float32) for d in DURATIONS]
    feats = [enc.extract(w) for w in waves]
    inputs = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    lengths = torch.tensor([f.shape[0] for f in feats])

    # encoder: its declared width, and frames as its rate says (one per clip if sequence-wise)
    hidden, frames = enc(inputs, lengths)
    assert hidden.shape[-1] == enc.dim == model.projector.in_dim
    for n, duration in zip(frames.tolist(), DURATIONS):
        if enc.sequence_wise:
            assert n == 1
        else:
            assert abs(n - enc.frame_rate * duration) <= max(2, 0.05 * enc.frame_rate * duration)

    # projector: the positions the config implies, at the LLM's width
    audio, positions = model.audio_embeddings(inputs, lengths, encoded=False)
    assert audio.shape[-1] == model.llm.get_input_embeddings().embedding_dim
    assert positions.tolist() == [expected_positions(enc, cfg, n) for n in frames.tolist()]

    # the assembled rows: prompt + audio positions + answer + end token, labels on the answer only
    targets = [model.tokenizer("hello world", add_special_tokens=False).input_ids] * 2
    _, mask, labels = model.assemble(audio, positions, targets)
    prompt = len(model.prompt.prefix_ids) + len(model.prompt.suffix_ids)
    for i in range(2):
        assert mask[i].sum() == prompt + positions[i] + len(targets[i]) + 1
        assert (labels[i] != IGNORE_INDEX).sum() == len(targets[i]) + 1

    # one optimiser step changes the trainable weights
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    out = model(inputs, lengths, targets, encoded=False)
    (out["loss"] + cfg.train.ctc_weight * out.get("ctc_loss", 0.0)).backward()
    torch.optim.AdamW(trainable, lr=1e-2).step()
    assert torch.isfinite(out["loss"])
    assert any(not torch.equal(b, p) for b, p in zip(before, trainable))

    hyps = model.eval().generate(inputs, lengths, encoded=False, max_new_tokens=3)
    assert len(hyps) == 2 and all(isinstance(h, str) for h in hyps)
