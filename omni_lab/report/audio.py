"""Listening to waveforms: a notebook player and WAV files for the reports.

`write_wav` keeps the samples as 32-bit float WAV (soundfile, subtype FLOAT), not 16-bit PCM: PCM's step of
3e-5 would erase the differences a float32 comparison is about, and a float WAV reads back bit for bit.
`play` goes through IPython.display.Audio, which always encodes 16-bit PCM; normalize=False keeps the level,
so a quiet difference sounds quiet instead of being scaled up to full volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from ..atomic import atomic_path
from ..compare.audio import SAMPLE_RATE


def _flat(wave) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"need a flat signal [samples], got {wave.shape}")
    return wave


def write_wav(path: str | Path, wave, rate: int = SAMPLE_RATE) -> Path:
    """Write a flat signal as a mono 32-bit float WAV at `rate`, atomically: a temporary file in the same folder
    renamed over `path`, so a reader (a browser playing a report) never sees a half-written file."""
    wave = _flat(wave).astype(np.float32)
    with atomic_path(path) as tmp:
        sf.write(tmp, wave, int(rate), subtype="FLOAT", format="WAV")
    return Path(path)


def play(wave, rate: int = SAMPLE_RATE):
    """An IPython.display.Audio player of a flat signal at its own level (normalize=False). Samples outside
    [-1, 1] are clipped, as a sound card would (IPython refuses them), and NaN plays as silence: a broken
    waveform can still be heard."""
    from IPython.display import Audio

    wave = np.clip(np.nan_to_num(_flat(wave).astype(np.float64), nan=0.0), -1.0, 1.0)
    return Audio(wave, rate=int(rate), normalize=False)
