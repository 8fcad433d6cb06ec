"""Waveform metrics and their bounds: how far our vocoder's output is from the reference's, in dB.

All arithmetic is float64; `ours` is the estimate and `ref` the reference, both flat [samples] at one rate.

- snr_db    = 10 log10(sum ref^2 / sum (ours - ref)^2). inf when the two are identical, -inf when only ref is
  silent. Sensitive to every error, a gain or a one-sample shift included.
- si_sdr_db = scale-invariant signal-to-distortion ratio (Le Roux et al., "SDR - half-baked or well done?",
  2019): the reference scaled by the optimal alpha = <ours, ref> / <ref, ref>, target = alpha ref,
  distortion = ours - target, si_sdr = 10 log10(sum target^2 / sum distortion^2). A gain on ours leaves it
  unchanged, so SNR low with SI-SDR high says "a level error", both low "a shape error". The signals are not
  made zero-mean first (torchmetrics' default): a DC offset is an error of ours that this should see.
  inf when identical; -inf when exactly one side is silent (nothing of ref is in ours, or the reverse).
- mel_distance_db: the mean over mel bins and frames of |10 log10 P_ours - 10 log10 P_ref|, where P is the
  mel power spectrogram (Transformers' `audio_utils.spectrogram` with its `mel_filter_bank`: Hann window of
  N_FFT samples, hop HOP, N_MELS Slaney mel bands from 0 Hz to rate / 2, |STFT|^2, centred frames) and both
  sides are floored at the reference's peak mel power minus TOP_DB dB (never below MEL_FLOOR), so bins that
  are silent in the reference cannot dominate the mean. 0 for identical signals and for two silences; a gain
  g on ours gives 20 log10(g) dB in every bin above the floor. It measures what is heard (the spectral
  envelope), blind to phase, where SNR and SI-SDR measure the sample values.
- max_abs   = max |ours - ref| (1 is full scale: the vocoder's output is clamped to [-1, 1]).

A non-finite sample on either side makes every metric NaN, which is never within bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

SAMPLE_RATE = 24_000  # code2wav's output rate
N_FFT = 1024          # 43 ms at 24 kHz: the window the vocoder literature's mel losses use (HiFi-GAN's 1024 / 256 / 80)
HOP = 256
N_MELS = 80
TOP_DB = 80.0         # librosa's power_to_db top_db: the dynamic range kept below the reference's peak
MEL_FLOOR = 1e-10     # audio_utils.spectrogram's own mel_floor: the absolute floor, for a silent reference


def _pair(ours, ref) -> tuple[np.ndarray, np.ndarray]:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape or ours.ndim != 1:
        raise ValueError(f"need two flat signals [samples] of one length: ours {ours.shape}, ref {ref.shape}")
    return ours, ref


def _finite(*arrays) -> bool:
    return all(np.isfinite(a).all() for a in arrays)


def _ratio_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise) with the edges of the module docstring: x / 0 is inf (0 / 0 too), 0 / x -inf."""
    if noise == 0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def snr_db(ours, ref) -> float:
    """10 log10(sum ref^2 / sum (ours - ref)^2), in dB."""
    ours, ref = _pair(ours, ref)
    if not _finite(ours, ref):
        return math.nan
    d = ours - ref
    return _ratio_db(float(ref @ ref), float(d @ d))


def si_sdr_db(ours, ref) -> float:
    """Scale-invariant SDR in dB: the reference optimally scaled to ours, see the module docstring."""
    ours, ref = _pair(ours, ref)
    if not _finite(ours, ref):
        return math.nan
    rr, oo = float(ref @ ref), float(ours @ ours)
    if rr == 0 or oo == 0:  # a silent side: no scaling of ref makes the other, unless both are silent
        return math.inf if rr == oo else -math.inf
    target = (float(ours @ ref) / rr) * ref
    e = ours - target
    return _ratio_db(float(target @ target), float(e @ e))


@lru_cache(maxsize=8)
def _mel_filters(rate: int) -> np.ndarray:
    return mel_filter_bank(N_FFT // 2 + 1, N_MELS, 0.0, rate / 2, rate, norm="slaney", mel_scale="slaney")


def mel_power(wave, rate: int = SAMPLE_RATE) -> np.ndarray:
    """[N_MELS, frames] mel power spectrogram of a flat signal (float64), no log and no floor beyond MEL_FLOOR."""
    wave = np.asarray(wave, np.float64)
    if wave.ndim != 1:
        raise ValueError(f"need a flat signal [samples], got {wave.shape}")
    return spectrogram(wave, window_function(N_FFT, "hann"), N_FFT, HOP, power=2.0, mel_filters=_mel_filters(rate),
                       mel_floor=MEL_FLOOR, dtype=np.float64)


def log_mel_db(ours, ref, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """(ours, ref) as 10 log10 of their mel power, both floored at the reference's peak minus TOP_DB: the two
    spectrograms that mel_distance_db compares (and the report draws)."""
    ours, ref = _pair(ours, ref)
    po, pr = mel_power(ours, rate), mel_power(ref, rate)
    floor = max(MEL_FLOOR, float(pr.max()) * 10 ** (-TOP_DB / 10))
    return 10 * np.log10(np.maximum(po, floor)), 10 * np.log10(np.maximum(pr, floor))


def mel_distance_db(ours, ref, rate: int = SAMPLE_RATE) -> float:
    """Mean |difference| of the floored log-mel power spectrograms, in dB (see the module docstring)."""
    ours, ref = _pair(ours, ref)
    if not ref.size:  # no frame to compare (the STFT cannot pad an empty signal): nothing differs
        return 0.0
    if not _finite(ours, ref):
        return math.nan
    lo, lr = log_mel_db(ours, ref, rate)
    return float(np.abs(lo - lr).mean())


def waveform_metrics(ours, ref, rate: int = SAMPLE_RATE) -> dict[str, float]:
    """snr_db, si_sdr_db, mel_distance_db and max_abs of two flat signals."""
    o, r = _pair(ours, ref)
    d = np.abs(o - r)
    return {"snr_db": snr_db(o, r), "si_sdr_db": si_sdr_db(o, r), "mel_distance_db": mel_distance_db(o, r, rate),
            "max_abs": float(d.max(initial=0.0)) if _finite(d) else math.nan}


@dataclass(frozen=True)
class WaveformBounds:
    """Pass limits of a waveform: snr_db >= snr_db, si_sdr_db >= si_sdr_db, mel_distance_db <= mel_distance_db;
    None switches one off.

    The defaults are for a float32 reference, where ours and Transformers do the same float32 math and differ
    only in rounding, about 1e-7 relative per op: SNRs far above 60 dB. 60 dB and 0.1 dB go together: white
    noise 60 dB below a speech signal gives a mel distance of about 0.075 dB, noise 40 dB below about 3 dB
    (tests/test_audio.py, on espeak-ng's speech).
    For looser references see WAVEFORM_BOUNDS.
    """

    snr_db: float | None = 60.0
    si_sdr_db: float | None = 60.0
    mel_distance_db: float | None = 0.1

    def violations(self, m: Mapping[str, float]) -> list[str]:
        """The broken limits, as text; a NaN metric breaks every limit set on it."""
        out = []
        for key, label, at_least in (("snr_db", "SNR", True), ("si_sdr_db", "SI-SDR", True),
                                     ("mel_distance_db", "mel distance", False)):
            limit = getattr(self, key)
            if limit is None:
                continue
            v = m[key]
            if not (v >= limit if at_least else v <= limit):  # False for NaN
                out.append(f"{label} {v:.4g} dB {'<' if at_least else '>'} {limit:g} dB")
        return out


# Named bounds by what the reference is. Measured on the tiny checkpoints (omni_lab.models.tiny_omni, presets
# "tiny" and "tiny-dense", 40 frames of random codes; Transformers' code2wav run in each dtype):
#   bfloat16 against float32: SNR 25.0 and 16.0 dB, mel distance 0.26 and 0.54 dB;
#   Q8_0 weights (every weight of 32k inputs, dequantized into the bfloat16 model) against bfloat16: SNR 18.7
#   and 16.7 dB, mel distance 0.58 and 0.52 dB.
# bfloat16 keeps 8 significant bits, so its rounding noise is signal-shaped: low SNR, small mel distance. The
# bounds sit ~6 dB of SNR under the worst measurement and ~3x its mel distance, where a real bug (a wrong
# activation, a shifted sample) lands near 0 dB. Revisit them when the released weights are measured.
WAVEFORM_BOUNDS = {
    "float32": WaveformBounds(),
    "bfloat16": WaveformBounds(snr_db=10.0, si_sdr_db=10.0, mel_distance_db=1.5),
    "q8_0": WaveformBounds(snr_db=10.0, si_sdr_db=10.0, mel_distance_db=2.0),  # Q8_0 against BF16
}
