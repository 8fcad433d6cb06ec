"""An ipywidgets explorer of a Comparison: pick component, layer, activation and token; the plots follow.

The plot is a PNG in an `Image` widget rather than inline matplotlib output, so it redraws the same way
under any matplotlib backend (and in a test with no kernel). Rendering is wired with
`ipywidgets.interactive_output`; its Output widget sits under the plot and shows anything the render
prints or raises in a notebook. A waveform is drawn by figures.waveform_detail at the comparison's sample rate,
and above the plot two Output widgets hold IPython.display.Audio players of it, ours and the reference's
(report.audio.play: at their own level); they are hidden for any other activation.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import ipywidgets as W
import numpy as np

from . import figures
from .audio import play

NO_LAYER = -1  # Dropdown value for the names of a component that sit outside its layers (embeddings, final norm)


def _label_layer(layer: int) -> str:
    return "— (no layer)" if layer == NO_LAYER else str(layer)


def _steps(a: np.ndarray, layout: str) -> int:
    """How many tokens (time steps) the token slider runs over; a flat signal is drawn whole."""
    return 1 if layout == "N" else figures.time_major(a, layout).shape[0]


def _whole_text(row) -> str:
    parts = []
    if row.total is not None:
        first = f" (first difference at {row.first_unequal})" if row.first_unequal is not None else ""
        parts.append(f"equal {row.equal} of {row.total}{first}")
    if row.has_float_metrics:
        what = "weights: " if row.kind == "routing" else ""
        parts.append(f"{what}MSE {row.mse:.3g}, cosine {row.cosine:.8f}, NMSE {row.nmse:.3g}, "
                     f"max |err| {row.max_abs:.3g}")
    if row.kind == "waveform":
        parts.append(row.waveform_text())
    return ", ".join(parts)


def explorer(comparison, ours: Mapping[str, np.ndarray] | None = None,
             ref: Mapping[str, np.ndarray] | None = None, metric: str = "nmse") -> W.VBox:
    """Build the explorer; `ours` and `ref` default to the sets the comparison was made from.

    The returned VBox carries its controls as attributes (component, layer, activation, token), the `image`
    and `info` widgets, `audio` (the row of a waveform's two players) with `audio_outputs`, its two Output
    widgets, and `players`, the (ours, reference) Audio objects shown or None, the interactive `output`, and
    `selected()` giving the activation name shown.
    """
    ours = comparison.ours if ours is None else ours
    ref = comparison.ref if ref is None else ref
    if hasattr(ref, "activations"):  # a store.Reference
        ref = ref.activations
    names = [r.name for r in comparison.rows if r.compared and r.name in ours and r.name in ref]
    if not names:
        raise ValueError("nothing to explore: no activation was compared on both sides")
    parts = figures.split_names(names)
    index = {(p.component, NO_LAYER if p.layer is None else p.layer, p.kind): n for n, p in parts.items()}
    components = list(dict.fromkeys(p.component for p in parts.values()))

    def layers_of(comp):
        return sorted({lay for c, lay, _ in index if c == comp})

    def kinds_of(comp, layer):
        return [k for c, lay, k in index if c == comp and lay == layer]

    fd = comparison.first_divergence
    start = fd.name if fd and fd.name in parts else next(
        (n for n in names if parts[n].component == figures.main_component(comparison)), names[0])
    p0 = parts[start]
    layer0 = NO_LAYER if p0.layer is None else p0.layer

    component = W.Dropdown(options=components, value=p0.component, description="component")
    layer = W.Dropdown(options=[(_label_layer(x), x) for x in layers_of(p0.component)], value=layer0,
                       description="layer")
    activation = W.Dropdown(options=kinds_of(p0.component, layer0), value=p0.kind, description="activation")
    token = W.IntSlider(value=0, min=0, max=max(_steps(ref[start], comparison[start].layout) - 1, 0),
                        description="token", continuous_update=False)
    image = W.Image(format="png", layout=W.Layout(width="100%"))
    info = W.HTML()
    audio_outputs = (W.Output(), W.Output())
    # One flat row, label then player: no VBox nested in the explorer's (test_browser finds it as the last one)
    audio = W.HBox([W.Label("ours"), audio_outputs[0], W.Label(f"reference ({comparison.dtype or '?'})"),
                    audio_outputs[1]], layout=W.Layout(display="none", align_items="center", grid_gap="1em"))

    def selected() -> str | None:
        return index.get((component.value, layer.value, activation.value))

    # Option updates are registered before interactive_output, so they run before each render.
    # Swapping a dropdown's options fires value changes of their own; renders wait until the swap is done
    # (a counter, since the swaps nest), then the control the user moved renders once.
    busy = [0]

    def fit_token():
        # The same kind in another layer can have another length (a vocoder's blocks upsample time), so the
        # slider follows every change of the selection, not only of the activation dropdown.
        name = selected()
        if name is None:
            return
        busy[0] += 1
        try:
            token.max = max(_steps(ref[name], comparison[name].layout) - 1, 0)
        finally:
            busy[0] -= 1

    def refresh_activations():
        opts = kinds_of(component.value, layer.value)
        keep = activation.value if activation.value in opts else (opts[0] if opts else None)
        busy[0] += 1
        try:
            activation.options = opts
            activation.value = keep
        finally:
            busy[0] -= 1
        fit_token()

    def on_component(change):
        opts = layers_of(change["new"])
        keep = layer.value if layer.value in opts else opts[0]
        busy[0] += 1
        try:
            layer.options = [(_label_layer(x), x) for x in opts]
            layer.value = keep
            refresh_activations()  # the layer value may not have changed, but the component's kinds have
        finally:
            busy[0] -= 1

    def on_layer(change):
        refresh_activations()

    def on_activation(change):
        fit_token()

    component.observe(on_component, "value")
    layer.observe(on_layer, "value")
    activation.observe(on_activation, "value")

    def render(component, layer, activation, token):
        name = index.get((component, layer, activation))
        if busy[0] or name is None:
            return
        row = comparison[name]
        a, b = np.asarray(ours[name]), np.asarray(ref[name])
        t = min(token, _steps(b, row.layout) - 1)
        fig = figures.activation_detail(a, b, t, name, row.per_token, metric, row.layout, comparison.sample_rate)
        image.value = figures.png_bytes(fig)
        show_players(name if row.kind == "waveform" else None, a, b)
        tok = {k: float(v[t]) for k, v in row.per_token.items()} if row.per_token else {}
        status = "within bounds" if row.within_bounds else "OUT OF BOUNDS: " + "; ".join(row.violations)
        step = "time step" if row.layout == "CT" else "token"
        info.value = (
            f"<b><code>{html.escape(name)}</code></b> {list(b.shape)} ({row.kind}, {row.layout}), "
            f"{html.escape(status)}<br>whole tensor: {_whole_text(row)}<br>"
            + (f"{step} {t}: MSE {tok['mse']:.3g}, cosine {tok['cosine']:.8f}, NMSE {tok['nmse']:.3g}, "
               f"max |err| {tok['max_abs']:.3g}" if tok else ""))
        box.renders += 1

    def show_players(name, a, b):
        # Encoded once per waveform shown, not on every redraw: a long waveform is megabytes of base64.
        if name == box.playing:
            return
        box.playing = name
        box.players = (play(a, comparison.sample_rate), play(b, comparison.sample_rate)) if name else None
        for out, player in zip(audio_outputs, box.players or (None, None)):
            out.outputs = ()
            if player is not None:
                out.append_display_data(player)
        audio.layout.display = None if name else "none"

    box = W.VBox()
    box.renders = 0
    box.playing, box.players, box.audio_outputs = None, None, audio_outputs
    output = W.interactive_output(render, {"component": component, "layer": layer, "activation": activation,
                                           "token": token})
    box.children = [W.HBox([component, layer, activation]), token, info, audio, image, output]
    box.component, box.layer, box.activation, box.token = component, layer, activation, token
    box.image, box.info, box.audio, box.output, box.selected = image, info, audio, output, selected
    return box
