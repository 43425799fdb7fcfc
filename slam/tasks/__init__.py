"""What the recipes build on beyond ASR: contextual biasing (biasing.py, ctc_filter.py),
captioning with CLAP-Refine and DRCap (captioning.py, drcap.py), translation (translation.py) and
sentence embeddings (sentence.py)."""
