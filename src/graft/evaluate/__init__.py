"""Metrics, baselines, the promotion gate and plots."""
