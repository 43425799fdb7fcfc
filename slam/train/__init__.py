"""Training: the train stage's loop (loop.py), multi-process set-up (distributed.py) and the
Whisper-decoder fine-tuning baseline (whisper_finetune.py)."""
