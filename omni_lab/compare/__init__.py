"""Comparison of activation sets: metrics per named activation, bounds, first divergence."""

from .metrics import (METRICS, Bounds, Comparison, FirstDivergence, Row, bounds_for, compare_sets, metrics,
                      per_token_metrics)

__all__ = ["METRICS", "Bounds", "Comparison", "FirstDivergence", "Row", "bounds_for", "compare_sets", "metrics",
           "per_token_metrics"]
