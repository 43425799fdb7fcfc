"""LLM backbones shaped like the packaged ones (Qwen2 chat, Gemma3 base) on tiny random models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from slam.config import LLMConfig, SlamConfig
from slam.model.llms import build_llm
from slam.model.speech_llm import build_prompt, build_speech_llm
from slam.testing import save_tiny_causal_lm


@pytest.fixture(scope="module")
def tiny_llms(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("llms")
    return {arch: str(save_tiny_causal_lm(root / arch, arch)) for arch in ("qwen2", "gemma3")}


def test_chat_model_prompt_ends_its_turn(tiny_llms) -> None:
    loaded = build_llm(LLMConfig(path=tiny_llms["qwen2"], chat_template=True))
    assert type(loaded.model).__name__ == "Qwen2ForCausalLM" and loaded.use_chat_template
    tok = loaded.tokenizer
    prompt = build_prompt(tok, "Transcribe the audio.", True, "")
    text = tok.decode(prompt.prefix_ids) + "|" + tok.decode(prompt.suffix_ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert prompt.eos_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_base_model_gets_plain_prompt_with_bos(tiny_llms) -> None:
    loaded = build_llm(LLMConfig(path=tiny_llms["gemma3"], chat_template=False))
    tok = loaded.tokenizer
    assert type(loaded.model).__name__ == "Gemma3ForCausalLM"
    assert not loaded.use_chat_template and tok.chat_template is None
    assert tok.pad_token == "<pad>"  # its own pad token, not eos
    prompt = build_prompt(tok, "Transcribe the audio.", False)
    assert prompt.prefix_ids == [tok.bos_token_id]  # once: the text has it, the encoding adds none
    assert tok.decode(prompt.suffix_ids) == "\nTranscribe the audio.\n"
    # a base model ends a text with <eos>, which is also what generation stops on
    assert prompt.eos_id == tok.convert_tokens_to_ids("<eos>") == loaded.model.generation_config.eos_token_id
    with pytest.raises(ValueError, match="no chat template"):
        build_llm(LLMConfig(path=tiny_llms["gemma3"], chat_template=True))


def test_gemma3_input_embeddings_are_already_scaled(tiny_llms) -> None:
    """What ``get_input_embeddings()(ids)`` returns is what the decoder sees: sqrt(hidden) x the
    table, and ``inputs_embeds`` is not scaled again. Projected audio mixes in at that scale."""
    model = build_llm(LLMConfig(path=tiny_llms["gemma3"], chat_template=False)).model.eval()
    embed = model.get_input_embeddings()
    ids = torch.tensor([[2, 5, 17, 40]])
    scale = math.sqrt(model.config.hidden_size)
    torch.testing.assert_close(embed(ids), embed.weight[ids] * scale)
    decoder = model.get_decoder()
    with torch.no_grad():
        by_ids = decoder(input_ids=ids).last_hidden_state
        by_embeds = decoder(inputs_embeds=embed(ids)).last_hidden_state
    torch.testing.assert_close(by_embeds, by_ids)
    assert model.config.final_logit_softcapping is None  # Gemma 2 caps, Gemma 3 does not


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_speech_llm_trains_and_generates(tiny_llms, arch) -> None:
    cfg = SlamConfig()
    cfg.llm.path = tiny_llms[arch]
    cfg.llm.chat_template = arch == "qwen2"
    cfg.projector.hidden = 32
    cfg.peft.r = 4
    torch.manual_seed(0)
    model = build_speech_llm(cfg, encoder_dim=24)
    audio = torch.randn(2, 20, 24)
    lengths = torch.tensor([20, 15])
    targets = [model.tokenizer("the quick fox", add_special_tokens=False).input_ids, [7, 8]]
    out = model(audio, lengths, targets)
    assert torch.isfinite(out["loss"]) and int(out["tokens"]) == sum(len(t) + 1 for t in targets)
    out["loss"].backward()
    assert model.projector_dtype == torch.float32
    assert any(p.grad is not None for p in model.projector.parameters())
    model.eval()
    texts = model.generate(audio, lengths, max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


@pytest.mark.parametrize("option", ["smollm2_135m_instruct", "qwen2_5_coder_0_5b_instruct", "gemma3_270m"])
def test_every_llm_option_is_imported_by_the_zoo(option) -> None:
    """``-S llm=<option>`` points at a folder the zoo_llm stage writes."""
    import yaml

    from slam.compose import compose_params

    root = Path(__file__).resolve().parents[2]
    composed = yaml.safe_load(compose_params([f"llm={option}"], root / "params"))
    zoo = {f"{composed['zoo']['llm_dir']}/{m['name']}": m for m in composed["zoo"]["llms"]}
    assert composed["llm"]["path"] in zoo
    assert zoo[composed["llm"]["path"]]["importer"] == "gguf_llm"
    assert composed["llm"]["chat_template"] == (option != "gemma3_270m")
