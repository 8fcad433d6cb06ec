"""Reports of a Comparison: figures (PNG via Agg), an HTML report, an ipywidgets explorer, and audio players."""

from .audio import play, write_wav
from .figures import (activation_detail, error_histogram, metrics_vs_layer, save_png, spectrogram_figure, split_names,
                      token_layer_heatmap, waveform_detail, waveform_figure)
from .html import write_report


def explorer(comparison, ours=None, ref=None, **kwargs):
    """See omni_lab.report.widgets.explorer (imported on first use: ipywidgets is only needed here)."""
    from .widgets import explorer as _explorer

    return _explorer(comparison, ours, ref, **kwargs)


__all__ = ["activation_detail", "error_histogram", "explorer", "metrics_vs_layer", "play", "save_png",
           "spectrogram_figure", "split_names", "token_layer_heatmap", "waveform_detail", "waveform_figure",
           "write_report", "write_wav"]
