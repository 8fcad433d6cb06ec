"""Reports of a Comparison: figures (PNG via Agg), an HTML report, and an ipywidgets explorer."""

from .figures import (activation_detail, error_histogram, metrics_vs_layer, save_png, split_names,
                      token_layer_heatmap)
from .html import write_report


def explorer(comparison, ours=None, ref=None, **kwargs):
    """See omni_lab.report.widgets.explorer (imported on first use: ipywidgets is only needed here)."""
    from .widgets import explorer as _explorer

    return _explorer(comparison, ours, ref, **kwargs)


__all__ = ["activation_detail", "error_histogram", "explorer", "metrics_vs_layer", "save_png", "split_names",
           "token_layer_heatmap", "write_report"]
