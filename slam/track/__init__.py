"""Tracking: MLflow runs (tracking.py), their records in git (records.py), the paper's tables
(tables.py) and figures (plots.py)."""
