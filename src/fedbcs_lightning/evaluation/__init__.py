"""Scoring and using trained models: the one ``evaluate`` function and its metrics,
checkpoint loading, per-site scoring of a checkpoint, prediction on image files, export."""
