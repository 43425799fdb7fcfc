"""Decoding: the decode and baseline stages (stage.py), transcribing any audio with a trained
model (inference.py), joint CTC/LLM decoding (ctc_prefix.py) and hypothesis files (hyps.py)."""
