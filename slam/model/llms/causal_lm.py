"""Any Hugging Face causal LM (Llama, Qwen2, Gemma, GPT-2, ...) with its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from slam.config import LLMConfig
from slam.registry import Registry


@dataclass
class LoadedLLM:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    use_chat_template: bool


LLMS: Registry[LoadedLLM] = Registry("llm")


@LLMS.register("causal_lm")
def build_causal_lm(cfg: LLMConfig) -> LoadedLLM:
    tokenizer = AutoTokenizer.from_pretrained(cfg.path, trust_remote_code=cfg.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        cfg.path, dtype="float32", trust_remote_code=cfg.trust_remote_code
    )
    if tokenizer.pad_token_id is None:  # batching needs a pad id; it is always masked out
        tokenizer.pad_token = tokenizer.eos_token
    use_chat = cfg.chat_template and tokenizer.chat_template is not None
    if cfg.chat_template and not use_chat:
        raise ValueError(
            f"llm.chat_template=true but {cfg.path} has no chat template; "
            "set llm.chat_template=false for a plain prompt"
        )
    return LoadedLLM(model=model, tokenizer=tokenizer, use_chat_template=use_chat)


def build_llm(cfg: LLMConfig) -> LoadedLLM:
    return LLMS.build(cfg.name, cfg)
