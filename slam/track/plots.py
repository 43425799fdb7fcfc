"""Figures people would rather see than read: learning curves and WER per set and system."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def _read_csv(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def learning_curve(metrics_dir: Path, out: Path) -> Path | None:
    """Train loss and dev loss / accuracy (and dev WER, when measured) against minutes of training."""
    train, dev = _read_csv(metrics_dir / "train_curve.csv"), _read_csv(metrics_dir / "dev_curve.csv")
    if not train:
        return None
    with_wer = bool(dev) and "dev_wer" in dev[0]
    fig, axes = plt.subplots(1, 3 if with_wer else 2, figsize=(15 if with_wer else 10, 4))
    ax_loss, ax_acc = axes[:2]
    if with_wer:
        minutes, wer = [r["minutes"] for r in dev], [100 * r["dev_wer"] for r in dev]
        axes[2].plot(minutes, wer, "o-", label="dev (greedy)")
        axes[2].set_ylabel("WER (%)")
    ax_loss.plot([r["minutes"] for r in train], [r["loss"] for r in train], label="train", alpha=0.7)
    if dev:
        ax_loss.plot([r["minutes"] for r in dev], [r["dev_loss"] for r in dev], "o-", label="dev")
        ax_acc.plot([r["minutes"] for r in dev], [r["dev_acc"] for r in dev], "o-", label="dev")
    ax_acc.plot([r["minutes"] for r in train], [r["acc"] for r in train], label="train", alpha=0.7)
    ax_loss.set_ylabel("answer-token loss")
    ax_acc.set_ylabel("answer-token accuracy")
    for ax in axes:
        ax.set_xlabel("minutes of training")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def score_bars(
    metrics: dict[str, dict[str, dict]], out: Path, key: str = "wer", label: str = "WER (%)",
    scale: float = 100,
) -> Path:
    """One score (``key`` of each summary, times ``scale``) of every system on every set and decoding."""
    keys = sorted({k for results in metrics.values() for k in results})
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(keys)), 4))
    width = 0.8 / max(1, len(metrics))
    for i, (system, results) in enumerate(metrics.items()):
        xs = [j + i * width for j in range(len(keys))]
        values = [scale * (results[k].get(key) or 0) if k in results else 0 for k in keys]
        ax.bar(xs, values, width, label=system)
    ax.set_xticks([j + width * (len(metrics) - 1) / 2 for j in range(len(keys))], keys)
    ax.set_ylabel(label)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
