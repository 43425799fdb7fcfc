"""Data: the corpora behind the prepare stage (corpora/), loading cuts (cuts.py), the encoder-output
cache stage (cache.py) and the augmentation of cached outputs (augment.py)."""
