"""Scoring: the score stage (stage.py) and the metrics it computes (metrics/)."""
