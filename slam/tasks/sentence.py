"""A frozen sentence encoder (all-MiniLM-L6-v2 in the zoo): unit vectors for texts.

Embeddings are the attention-masked mean of the encoder's last hidden states, which is how
sentence-transformers pools MiniLM and MPNet; plain transformers loads them, so
sentence-transformers is not needed. One class serves the captioning recipe's contrastive
text branch and the sentence-similarity metric.
"""

from __future__ import annotations

from pathlib import Path

import torch


class SentenceEncoder:
    """``path``: a model dir (or a Hugging Face id, for users with a hub); no remote code."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", max_length: int = 128) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
        self.model = AutoModel.from_pretrained(str(path), trust_remote_code=False).to(device).eval()
        self.device, self.max_length = device, max_length
        self.dim = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """``[len(texts), dim]`` unit vectors (float32, on the CPU)."""
        vectors = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")  # fmt: skip
            batch = batch.to(self.device)
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vectors.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(vectors) if vectors else torch.zeros(0, self.dim)
