"""Waveform metrics against hand-computed values, their bounds in compare_sets, and the audio of the reports."""

import itertools
import json
import math
import shutil
import subprocess

import numpy as np
import pytest

from omni_lab.activations import Activation
from omni_lab.compare import (WAVEFORM_BOUNDS, Bounds, WaveformBounds, compare_sets, mel_distance_db, si_sdr_db,
                              snr_db, waveform_metrics)

RATE = 24_000


def sine(seconds=1.0, hz=440.0, amp=0.5, rate=RATE):
    return amp * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)


def speechlike(rng, seconds=1.0, rate=RATE):
    """Harmonics of a gliding 120-180 Hz pitch with a falling spectrum, under a syllable-rate envelope, and a
    little noise: energy in every mel band, unlike a pure tone, and silence-free."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(150 + 30 * np.sin(2 * np.pi * 2 * t)) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 40))
    x *= 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 3 * t))
    return 0.2 * x / np.abs(x).max() + 1e-3 * rng.standard_normal(t.size)


def planted(ref, db, rng):
    """ref plus white noise exactly `db` below it (the noise's energy scaled to the ratio)."""
    n = rng.standard_normal(ref.shape)
    return ref + n * np.sqrt((ref ** 2).sum() / (n ** 2).sum()) * 10 ** (-db / 20)


# ---- the metrics ----------------------------------------------------------------------------------------
def test_hand_computed_values():
    # ours [2, 1], ref [1, 0]: error [1, 1], SNR 10 log10(1 / 2); alpha = 2, target [2, 0], distortion [0, 1]
    assert snr_db([2.0, 1.0], [1.0, 0.0]) == pytest.approx(10 * math.log10(0.5), rel=1e-14)
    assert si_sdr_db([2.0, 1.0], [1.0, 0.0]) == pytest.approx(10 * math.log10(4), rel=1e-14)
    assert si_sdr_db([1.0, 1.0], [1.0, 0.0]) == pytest.approx(0.0, abs=1e-14)
    m = waveform_metrics(np.array([2.0, 1.0]), np.array([1.0, 0.0]))
    assert m["max_abs"] == 1.0 and m["snr_db"] == snr_db([2.0, 1.0], [1.0, 0.0])


def test_snr_of_a_sine_with_noise_of_known_power(rng):
    # amplitude 0.5: power 0.125; noise of standard deviation sigma: power sigma^2, drawn, not rescaled
    ref = sine(1.0, amp=0.5)
    for planted_db in (20.0, 40.0, 60.0):
        sigma = math.sqrt(0.125 / 10 ** (planted_db / 10))
        ours = ref + sigma * rng.standard_normal(ref.size)
        assert snr_db(ours, ref) == pytest.approx(planted_db, abs=0.1)
        assert si_sdr_db(ours, ref) == pytest.approx(planted_db, abs=0.1)  # the noise is (nearly) orthogonal to ref


def test_si_sdr_is_blind_to_the_estimates_scale_and_snr_is_not(rng):
    ref = speechlike(rng)
    ours = planted(ref, 30.0, rng)
    base = si_sdr_db(ours, ref)
    for g in (0.01, 0.5, 3.0, -2.0):
        assert si_sdr_db(g * ours, ref) == pytest.approx(base, abs=1e-9)
    assert snr_db(0.5 * ours, ref) < 7.0 < base  # a gain of 0.5 is a 6 dB error to SNR
    assert si_sdr_db(0.5 * ref, ref) == math.inf and snr_db(0.5 * ref, ref) == pytest.approx(20 * math.log10(2))


def test_edges_silence_identity_and_nonfinite(rng):
    x, z = speechlike(rng, 0.2), np.zeros(int(0.2 * RATE))
    assert snr_db(x, x) == si_sdr_db(x, x) == math.inf and mel_distance_db(x, x) == 0.0
    assert snr_db(z, z) == si_sdr_db(z, z) == math.inf and mel_distance_db(z, z) == 0.0
    assert snr_db(x, z) == si_sdr_db(x, z) == -math.inf  # sound where the reference is silent
    assert snr_db(z, x) == 0.0 and si_sdr_db(z, x) == -math.inf  # silence where it is not
    assert 0 < mel_distance_db(x, z) < math.inf and 0 < mel_distance_db(z, x) < math.inf
    assert si_sdr_db([1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]) == -math.inf  # orthogonal: none of ref in ours
    bad = x.copy()
    bad[100] = np.nan
    assert all(math.isnan(v) for v in waveform_metrics(bad, x).values())
    assert all(math.isnan(v) for v in waveform_metrics(x, bad).values())
    assert waveform_metrics(np.zeros(0), np.zeros(0)) == {"snr_db": math.inf, "si_sdr_db": math.inf,
                                                          "mel_distance_db": 0.0, "max_abs": 0.0}
    with pytest.raises(ValueError, match="one length"):
        snr_db(x, x[:-1])


def test_mel_distance_is_zero_for_identical_and_grows_with_the_error(rng):
    ref = speechlike(rng)
    dists = [mel_distance_db(planted(ref, db, rng), ref) for db in (80, 60, 40, 20, 0)]
    assert all(a < b for a, b in itertools.pairwise(dists)), dists
    assert dists[0] < 0.01 and dists[-1] > 5
    # a gain g moves every bin above the floor by 20 log10(g): white noise has no bin near the floor (to 1e-6:
    # audio_utils.spectrogram keeps the STFT in complex64)
    noise = rng.standard_normal(RATE // 2)
    assert mel_distance_db(1.1 * noise, noise) == pytest.approx(20 * math.log10(1.1), rel=1e-6)
    # a one-sample delay is a large SNR error and a tiny spectral one: the two families see different things
    delayed = np.concatenate([[0.0], ref[:-1]])
    assert snr_db(delayed, ref) < 20 and mel_distance_db(delayed, ref) < 0.05


def test_mel_distance_needs_the_rate(rng):
    # the filterbank is in Hz: a 6 kHz tone sits in a different band at 16 kHz than at 24 kHz
    ref = sine(0.5, hz=3000.0)
    ours = ref + sine(0.5, hz=6000.0, amp=0.05)
    assert mel_distance_db(ours, ref, 16_000) != pytest.approx(mel_distance_db(ours, ref, 24_000), rel=1e-3)


# ---- bounds -----------------------------------------------------------------------------------------------
def test_bounds_texts_switches_and_named_defaults():
    m = {"snr_db": 45.0, "si_sdr_db": 61.0, "mel_distance_db": 0.25}
    assert WaveformBounds().violations(m) == ["SNR 45 dB < 60 dB", "mel distance 0.25 dB > 0.1 dB"]
    assert WaveformBounds(snr_db=None, mel_distance_db=None).violations(m) == []
    assert WaveformBounds().violations({k: math.nan for k in m}) == [
        "SNR nan dB < 60 dB", "SI-SDR nan dB < 60 dB", "mel distance nan dB > 0.1 dB"]
    assert WAVEFORM_BOUNDS["float32"] == WaveformBounds() == Bounds().waveform
    f32, bf16, q8 = (WAVEFORM_BOUNDS[k] for k in ("float32", "bfloat16", "q8_0"))
    assert f32.snr_db > bf16.snr_db and f32.mel_distance_db < bf16.mel_distance_db <= q8.mel_distance_db


def test_compare_sets_names_the_broken_waveform_bounds(rng):
    ref = speechlike(rng).astype(np.float32)
    spec = Activation("code2wav", ref.shape, "N", "waveform")
    # a level error only: SNR breaks, SI-SDR (scale-blind) holds; mel sees 20 log10(0.9) = 0.92 dB
    c = compare_sets({"code2wav": 0.9 * ref}, {"code2wav": ref}, specs=[spec])
    row = c["code2wav"]
    assert row.within_bounds is False and c.first_divergence.name == "code2wav"
    assert [v.split()[0] for v in row.violations] == ["SNR", "mel"] and row.violations[0].startswith("SNR 20 dB")
    assert row.si_sdr_db > 100 and row.mel_distance_db == pytest.approx(-20 * math.log10(0.9), abs=0.01)
    # noise 40 dB down breaks SNR and SI-SDR; the row quotes the three dB figures
    c = compare_sets({"code2wav": planted(ref, 40.0, rng).astype(np.float32)}, {"code2wav": ref}, specs=[spec])
    row = c["code2wav"]
    assert [v.split()[0] for v in row.violations] == ["SNR", "SI-SDR", "mel"]
    assert "SI-SDR 40.0 dB" in row.agreement() and "mel distance" in row.agreement()
    j = c.to_json()
    json.dumps(j, allow_nan=False)
    a = j["activations"][0]
    assert (a["snr_db"], a["si_sdr_db"], a["mel_distance_db"]) == (row.snr_db, row.si_sdr_db, row.mel_distance_db)
    assert j["bounds"]["waveform"] == {"snr_db": 60.0, "si_sdr_db": 60.0, "mel_distance_db": 0.1}
    assert j["sample_rate"] == RATE and j["first_divergence_detail"]["violations"] == row.violations
    # an error shaped like the signal, 20 dB down (as rounding inside the network comes out through the later
    # convolutions: an echo here) is within a bfloat16 reference's bounds, set through an override; the float
    # bounds (an mse it breaks) do not apply to a waveform
    loose = {"code2wav": Bounds(mse=1e-12, waveform=WAVEFORM_BOUNDS["bfloat16"])}
    rel = ref + 0.1 * np.roll(ref, 37)
    c = compare_sets({"code2wav": rel}, {"code2wav": ref}, specs=[spec], overrides=loose)
    assert c.passed and c["code2wav"].snr_db == pytest.approx(20.0, abs=0.2) and c["code2wav"].mse > 1e-12
    assert not compare_sets({"code2wav": rel}, {"code2wav": ref}, specs=[spec]).passed  # float32's bounds
    # exact: every dB figure infinite, strict JSON writes null; other kinds have none
    exact = compare_sets({"code2wav": ref}, {"code2wav": ref}, specs=[spec])
    assert exact.passed and exact.to_json()["activations"][0]["si_sdr_db"] is None
    plain = compare_sets({"x": np.ones((2, 3))}, {"x": np.ones((2, 3))})["x"]
    assert math.isnan(plain.si_sdr_db) and math.isnan(plain.mel_distance_db)


def test_a_nan_in_the_waveform_breaks_every_bound(rng):
    ref = speechlike(rng, 0.2).astype(np.float32)
    ours = ref.copy()
    ours[7] = np.nan
    row = compare_sets({"w": ours}, {"w": ref}, specs=[Activation("w", ref.shape, "N", "waveform")])["w"]
    assert row.violations[0] == "1 non-finite values in ours" and len(row.violations) == 4


# ---- real speech (espeak-ng) --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A sentence of espeak-ng's synthetic speech at its own rate (22050 Hz)."""
    import soundfile as sf

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is absent (Debian package 'espeak-ng'; scripts/test.sh installs it where apt is "
                    "usable); the synthetic signals above cover the metrics")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(path),
                    "The quick brown fox jumps over the lazy dog, and the workbench hears it."], check=True)
    wave, rate = sf.read(path, dtype="float64")
    return wave, rate


def test_metrics_on_real_speech_degraded_in_known_ways(speech, rng):
    ref, rate = speech
    assert rate == 22050 and ref.size > rate  # a sentence, not an empty file
    bounds = WAVEFORM_BOUNDS["float32"]

    def judged(ours):
        m = waveform_metrics(ours, ref, rate)
        return m, bounds.violations(m)

    # white noise 60 dB down: the float32 bounds hold (their docstring's 0.075 dB is this case), 40 dB down: not
    m, v = judged(planted(ref, 60.0, rng))
    assert v == [] and m["snr_db"] == pytest.approx(60.0, abs=1e-9) and 0.03 < m["mel_distance_db"] < 0.1
    m, v = judged(planted(ref, 40.0, rng))
    assert [x.split()[0] for x in v] == ["SNR", "SI-SDR", "mel"] and 1 < m["mel_distance_db"] < 6
    # everything above 4 kHz removed: most of the energy is kept (SNR well above 0 dB), the spectrum is not
    spec = np.fft.rfft(ref)
    spec[np.fft.rfftfreq(ref.size, 1 / rate) > 4000] = 0
    m, _ = judged(np.fft.irfft(spec, ref.size))
    assert m["snr_db"] > 10 and m["mel_distance_db"] > 3
    # float32 rounding of the reference itself is far inside the float32 bounds
    m, v = judged(ref.astype(np.float32).astype(np.float64))
    assert v == [] and m["snr_db"] > 120


# ---- WAV files, players, report and explorer ----------------------------------------------------------------
def decode(audio):
    """(samples, rate) of an IPython.display.Audio's WAV data."""
    import io

    import soundfile as sf

    return sf.read(io.BytesIO(audio.data), dtype="float64")


def test_write_wav_is_exact_atomic_and_carries_the_rate(tmp_path, rng, monkeypatch):
    import os

    import soundfile as sf

    from omni_lab.report.audio import write_wav

    wave = (speechlike(rng, 0.25) + 1e-6 * rng.standard_normal(6000)).astype(np.float32)
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((src.name, dst.name)), real_replace(src, dst)))
    path = write_wav(tmp_path / "w.wav", wave, 22050)
    # one rename, from a hidden temporary of this process (omni_lab/atomic.py), and nothing left beside it
    assert [dst for _, dst in renames] == ["w.wav"] and renames[0][0].startswith(f".w.wav.tmp-{os.getpid()}-")
    assert sorted(os.listdir(tmp_path)) == ["w.wav"]
    back, rate = sf.read(path, dtype="float32")
    assert rate == 22050 and sf.info(path).subtype == "FLOAT"
    np.testing.assert_array_equal(back, wave)  # bit for bit: a 1e-6 difference survives the file
    with pytest.raises(ValueError, match="flat signal"):
        write_wav(tmp_path / "x.wav", wave[None], RATE)


def test_play_keeps_the_level_and_survives_a_broken_waveform():
    from omni_lab.report.audio import play

    quiet, rate = decode(play(sine(0.1, amp=0.01, rate=16_000), 16_000))
    assert rate == 16_000 and quiet.size == 1600
    assert np.abs(quiet).max() == pytest.approx(0.01, abs=1e-4)  # not normalised up to full scale
    loud = sine(0.1, amp=2.0)
    loud[5] = np.nan
    back, _ = decode(play(loud))
    assert np.abs(back).max() == pytest.approx(1.0, abs=1e-4) and back[5] == 0.0  # clipped; NaN silent


def waveform_comparison(rng, rate=RATE, seconds=0.5, **kw):
    ref = speechlike(rng, seconds, rate).astype(np.float32)
    names = {"code2wav.decoder.0": rng.standard_normal((4, 50)).astype(np.float32), "code2wav": ref}
    ours = {n: a + np.float32(1e-6) * rng.standard_normal(a.shape).astype(np.float32) for n, a in names.items()}
    specs = [Activation("code2wav.decoder.0", (4, 50), "CT"), Activation("code2wav", ref.shape, "N", "waveform")]
    return compare_sets(ours, names, specs=specs, manifest={"dtype": "float32"}, sample_rate=rate, **kw)


def test_report_plays_both_waveforms_at_the_comparisons_rate(tmp_path, rng):
    import re

    import soundfile as sf

    from omni_lab.report import write_report

    c = waveform_comparison(rng, rate=22050, seconds=0.5)
    index = write_report(c, tmp_path, sample_rate=22050)
    text = index.read_text()
    srcs = re.findall(r"<audio controls preload='metadata' src='([^']+)'>", text)
    assert srcs == ["code2wav_ours.wav", "code2wav_ref.wav"] and text.count("<audio") == 2
    for src, side in zip(srcs, (c.ours, c.ref)):
        info = sf.info(tmp_path / src)
        assert (info.samplerate, info.frames, info.channels) == (22050, side["code2wav"].size, 1)
        assert info.duration == pytest.approx(0.5, abs=1 / 22050)
        np.testing.assert_array_equal(sf.read(tmp_path / src, dtype="float32")[0], side["code2wav"])
    assert "reference (float32)" in text and "at 22050 Hz" in text
    assert (tmp_path / "waveform_code2wav.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "waveform: SNR &ge; 60 dB, SI-SDR &ge; 60 dB, mel distance &le; 0.1 dB" in text
    row = c["code2wav"]
    assert row.within_bounds and f"SI-SDR {row.si_sdr_db:.1f} dB" in text  # in the notes and the headroom
    assert json.loads((tmp_path / "report.json").read_text())["sample_rate"] == 22050
    with pytest.raises(ValueError, match="measured at 22050 Hz"):
        write_report(c, tmp_path / "again", sample_rate=24000)
    # an override's waveform bounds are the ones the page quotes
    bf16 = waveform_comparison(rng, overrides={"code2wav": Bounds(waveform=WAVEFORM_BOUNDS["bfloat16"])})
    text = write_report(bf16, tmp_path / "bf16").read_text()
    assert "waveform: SNR &ge; 10 dB, SI-SDR &ge; 10 dB, mel distance &le; 1.5 dB" in text
    assert "SNR &ge; 60 dB" not in text  # the float32 defaults are not the ones quoted


def test_explorer_plays_a_waveform_and_hides_the_players_elsewhere(rng):
    from omni_lab.report import explorer

    c = waveform_comparison(rng)
    box = explorer(c)
    box.component.value = "(other)"
    assert box.selected() == "code2wav" and box.image.value[:4] == b"\x89PNG" and "SI-SDR" in box.info.value
    ours, ref = box.players
    (a, rate_a), (b, rate_b) = decode(ours), decode(ref)
    assert rate_a == rate_b == RATE and a.size == b.size == c.ref["code2wav"].size
    np.testing.assert_allclose(b, c.ref["code2wav"], atol=2 / 32767)  # IPython truncates to 16-bit PCM
    assert box.audio.layout.display is None
    for out in box.audio_outputs:
        assert len(out.outputs) == 1 and "<audio" in out.outputs[0]["data"]["text/html"]
    box.component.value = "code2wav.decoder"
    assert box.selected() == "code2wav.decoder.0" and box.players is None
    assert box.audio.layout.display == "none" and all(not out.outputs for out in box.audio_outputs)
