"""The model: audio encoders, projectors and LLMs (each a registry), LoRA and other tuning
(tuning.py), the CTC head (ctc.py) and the assembled SpeechLLM with save/load (speech_llm.py)."""
