"""Tiny random models built from configs, saved like real ones, for tests and smoke runs.

They load through exactly the code paths the real zoo models take (``from_pretrained`` on a
local dir), so a pipeline that works with them works with real weights.
"""

from __future__ import annotations

import struct
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertModel,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizerFast,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                    "<|translate|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
                    "<|notimestamps|>"]
_TEXT = ("the quick brown fox jumps over the lazy dog transcribe the audio hello world "
         "speech recognition with a large language model and a whisper encoder").split()


def _byte_bpe(specials: list[str], vocab_size: int = 320) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([" ".join(_TEXT)] * 4, trainer=trainer)
    return tok


def save_tiny_llm(
    directory: str | Path, hidden: int = 32, layers: int = 2, seed: int = 0, tie_embeddings: bool = False
) -> Path:
    """A random Llama with a byte-level BPE tokenizer and a chat template (``tie_embeddings``:
    the output layer is the token embeddings, as in SmolLM2)."""
    directory = Path(directory)
    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_bpe(specials), pad_token="<|pad|>", eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=tie_embeddings,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_sentence_encoder(directory: str | Path, hidden: int = 16, seed: int = 0) -> Path:
    """A random BERT with a byte-level BPE tokenizer: loads as the zoo's MiniLM does."""
    directory = Path(directory)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(["[PAD]", "[UNK]"]), pad_token="[PAD]",
                                        unk_token="[UNK]")  # fmt: skip
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128,
                        pad_token_id=tokenizer.pad_token_id, architectures=["BertModel"])  # fmt: skip
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_whisper(directory: str | Path, d_model: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random English-only Whisper with processor files and a generation config."""
    directory = Path(directory)
    tokenizer = WhisperTokenizerFast(
        tokenizer_object=_byte_bpe(WHISPER_SPECIALS), unk_token="<|endoftext|>",
        bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in WHISPER_SPECIALS}
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=128, pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=False, max_length=64,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(directory)
    return directory


def save_tiny_causal_lm(
    directory: str | Path, architecture: str = "qwen2", hidden: int = 32, layers: int = 2, seed: int = 0
) -> Path:
    """A random causal LM shaped like one of the packaged LLMs, with a matching tokenizer.

    ``qwen2``: a chat model like Qwen2.5-Coder-Instruct (``<|im_start|>`` chat template, ends
    its turn with ``<|im_end|>``, no BOS added). ``gemma3``: a base model like Gemma-3-270M (no
    chat template; the tokenizer adds ``<bos>``; ``<eos>`` ends a text; scaled embeddings,
    sliding and full attention layers).
    """
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, Qwen2Config

    directory = Path(directory)
    torch.manual_seed(seed)
    if architecture == "qwen2":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=_byte_bpe(specials), pad_token="<|endoftext|>", eos_token="<|im_end|>",
            bos_token="<|endoftext|>",
        )
        tokenizer.chat_template = CHAT_TEMPLATE
        config = Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
            num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=1024, tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
    elif architecture == "gemma3":
        specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
        backend = _byte_bpe(specials)
        bos = backend.token_to_id("<bos>")
        backend.post_processor = TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
        )
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
            unk_token="<unk>",
        )
        config = Gemma3TextConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
            num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
            query_pre_attn_scalar=16, sliding_window=8, max_position_embeddings=1024,
            layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"],
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
    else:
        raise ValueError(f"no tiny {architecture!r} LLM; known: qwen2, gemma3")
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU .mo catalog (what msgfmt writes): header, two offset tables, the strings."""
    keys = sorted(messages)
    ids, strs = [k.encode() for k in keys], [messages[k].encode() for k in keys]
    start = 28 + 16 * len(keys)
    offsets, blob = [], b""
    for data in ids + strs:
        offsets.append((len(data), start + len(blob)))
        blob += data + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, len(keys), 28, 28 + 8 * len(keys), 0, 0)
    tables = b"".join(struct.pack("<2I", n, o) for n, o in offsets)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + tables + blob)
