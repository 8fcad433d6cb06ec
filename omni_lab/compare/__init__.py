"""Comparison of activation sets: metrics per named activation, bounds, first divergence."""

from .audio import WAVEFORM_BOUNDS, WaveformBounds, mel_distance_db, si_sdr_db, snr_db, waveform_metrics
from .metrics import (METRICS, Bounds, Comparison, FirstDivergence, Row, bounds_for, compare_sets, metrics,
                      per_token_metrics)

__all__ = ["METRICS", "WAVEFORM_BOUNDS", "Bounds", "Comparison", "FirstDivergence", "Row", "WaveformBounds",
           "bounds_for", "compare_sets", "mel_distance_db", "metrics", "per_token_metrics", "si_sdr_db", "snr_db",
           "waveform_metrics"]
