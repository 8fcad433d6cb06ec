"""Audio in: the AuT audio encoder and the thinker with audio prompts on our kernels against Transformers
(float32, the same BF16 weights, the same features from the checkpoint's own feature extractor), on real
speech made with espeak-ng (22.05 kHz, so the resampler runs) and synthetic clips of 0.3 s, 1 s, 7.3 s and
31 s; and the input errors."""

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from omni_lab.models import audio_encoder as enc
from omni_lab.models.audio_in import (INPUTS_EMBEDS, SAMPLE_RATE, AudioFileError, ThinkerWithAudio, audio_prompt_ids,
                                      hf_activations, hf_generate, load_audio_inputs, read_audio)
from omni_lab.models.audio_encoder import AudioEncoder
from omni_lab.models.component import ModelInputError
from omni_lab.models.tiny_omni import build_tiny_omni
from omni_lab.reference import load_hf_model
from model_checks import assert_greedy_matches

SPEECH = {"ru": "Привет мир", "en": "The quick brown fox jumps over the lazy dog."}


@pytest.fixture(scope="module", params=[("tiny", 0), ("tiny-dense", 1)], ids=lambda p: p[0])
def checkpoint(request, tmp_path_factory):
    preset, seed = request.param
    path = build_tiny_omni(tmp_path_factory.mktemp(preset) / "ckpt", seed=seed, preset=preset)
    return path, load_hf_model(path, "float32")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """name -> file: the espeak-ng recordings (when espeak-ng is installed) and synthetic clips: a chirp with
    noise, the 1 s one stereo at 44.1 kHz (mixdown and resampling), the others at 16 kHz."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    out = {}
    for seconds, rate, channels in ((0.3, 16000, 1), (1.0, 44100, 2), (7.3, 16000, 1), (31.0, 16000, 1)):
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(len(t))
        if channels == 2:
            wave = np.stack([wave, 0.5 * np.roll(wave, 7)], axis=1)
        path = root / f"clip_{seconds}s.wav"
        sf.write(path, wave.astype(np.float32), rate)
        out[f"{seconds}s"] = path
    if shutil.which("espeak-ng"):
        for name, text in SPEECH.items():
            path = root / f"speech_{name}.wav"
            subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
            out[name] = path
    return out


def speech(clips, name):
    if name not in clips:
        pytest.skip("espeak-ng is not installed")
    return clips[name]


def assert_matches(ours: dict, ref: dict, names) -> int:
    """Every activation at cosine >= 0.99999 and MSE < 1e-5; router expert ids exactly. Returns the count."""
    assert set(ref) == set(names), sorted(set(names) ^ set(ref))
    for n in names:
        a, b = ours[n].astype(np.float64), ref[n].astype(np.float64)
        assert a.shape == b.shape, f"{n}: {a.shape} vs {b.shape}"
        if n.endswith(".mlp.router"):
            k = a.shape[1] // 2
            assert (a[:, :k] == b[:, :k]).all(), f"{n}: expert choices differ"
            np.testing.assert_allclose(a[:, k:], b[:, k:], rtol=0, atol=2e-6, err_msg=n)
            continue
        cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
        mse = float(((a - b) ** 2).mean())
        assert cos >= 0.99999 and mse < 1e-5, f"{n}: cosine {cos:.7f}, mse {mse:.2e}"
    return len(names)


def test_encoder_every_activation_matches_transformers(checkpoint, clips):
    """Several audios in one forward (their chunks padded together, windows per audio): speech, 0.3 s (shorter
    than a chunk: the only chunk is ragged) and 7.3 s (several windows, the last ragged)."""
    path, hf = checkpoint
    files = [speech(clips, "ru"), clips["0.3s"], clips["7.3s"]]
    feats = load_audio_inputs(path, files, 512)
    model = AudioEncoder.load(path, max_len=512)
    names = [a.name for a in model.activations([f.shape[1] for f in feats])]
    lay = enc.layout(model.cfg, [f.shape[1] for f in feats])
    assert len(lay.cu_seqlens) > len(files) + 1 and len(set(np.diff(lay.cu_seqlens))) > 1  # windows cut, ragged
    assert assert_matches(model.forward(feats, taps=names), enc.hf_activations(hf, names, feats), names) == len(names)


def test_encoder_31_seconds_alone(checkpoint, clips):
    path, hf = checkpoint
    if "dense" in path.parent.name:
        pytest.skip("one shape is enough for the long clip")
    feats = load_audio_inputs(path, [clips["31.0s"]], 512)
    model = AudioEncoder.load(path, max_len=512)
    names = [a.name for a in model.activations([feats[0].shape[1]])]
    assert assert_matches(model.forward(feats, taps=names), enc.hf_activations(hf, names, feats), names)


def test_thinker_with_audio_matches_transformers(checkpoint, clips):
    """Two audios and text in one chat prompt: every encoder and thinker activation, the experts chosen, and
    greedy tokens."""
    path, hf = checkpoint
    files = [speech(clips, "en"), clips["1.0s"]]
    feats = load_audio_inputs(path, files, 512)
    ids = audio_prompt_ids(path, [f.shape[1] for f in feats], "Hello, world!")
    model = ThinkerWithAudio.load(path, max_len=len(ids) + 8)
    assert (ids == model.audio_token_id).sum() == sum(enc.output_length(f.shape[1]) for f in feats)
    names = [a.name for a in model.activations(ids, feats)]
    ours = model.forward(ids, feats, taps=names)
    assert assert_matches(ours, hf_activations(hf, names, ids, feats), names) > 20
    # the audio reached the thinker: its rows are the encoder's output, not the placeholder's embedding
    at = ids == model.audio_token_id
    np.testing.assert_allclose(ours[INPUTS_EMBEDS][at], ours[enc.OUTPUT], rtol=0, atol=0)
    n_new = 6
    assert_greedy_matches(model.generate(ids, feats, n_new, stop_at_eos=False), hf_generate(hf, ids, feats, n_new))


def test_reading_mixes_down_and_resamples(clips):
    stereo, rate = sf.read(clips["1.0s"], dtype="float32")
    mono = read_audio(clips["1.0s"])
    assert rate == 44100 and stereo.ndim == 2 and len(mono) == SAMPLE_RATE
    # the resampled mean of the channels: its level is the mixdown's, not one channel's
    assert abs(np.sqrt((mono ** 2).mean()) - np.sqrt((stereo.mean(1) ** 2).mean())) < 0.01


def test_bad_audio_files_are_refused_by_name(tmp_path, checkpoint, clips):
    path, _ = checkpoint
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + clips["0.3s"].read_bytes()[20:60])
    for f, what in ((empty, "empty"), (text, "not an audio file"), (silent, "silent"), (corrupt, "not an audio file"),
                    (tmp_path / "missing.wav", "no such")):
        with pytest.raises(AudioFileError, match=what) as e:
            read_audio(f)
        assert str(f) in str(e.value)
    with pytest.raises(AudioFileError, match=r"7.3 s of audio is 95 audio tokens; this model takes at most 50") as e:
        load_audio_inputs(path, [clips["7.3s"]], 50)
    assert str(clips["7.3s"]) in str(e.value)


def test_placeholder_count_must_match_the_audio(checkpoint, clips):
    path, _ = checkpoint
    feats = load_audio_inputs(path, [clips["0.3s"]], 512)
    ids = audio_prompt_ids(path, [feats[0].shape[1]], "Hi")
    model = ThinkerWithAudio.load(path, max_len=64)
    one_less = np.delete(ids, np.flatnonzero(ids == model.audio_token_id)[0])
    with pytest.raises(ModelInputError, match="audio placeholders"):
        model.forward(one_less, feats)


def test_q8_0_encoder_from_the_quantizer(tmp_path, checkpoint, clips):
    """`omni-lab quantize` makes the encoder's linears Q8_0 where their width allows and keeps the conv2d stem as
    stored; the GGUF's encoder runs on our Q8_0 kernels close to Transformers (the BF16 weights, float32)."""
    from omni_lab.formats.gguf_io import open_checkpoint
    from omni_lab.formats.quantize import quantize_checkpoint

    path, hf = checkpoint
    gguf = tmp_path / "q8.gguf"
    quantize_checkpoint(path, gguf)
    dtypes = {n: open_checkpoint(gguf).dtype(n) for n in open_checkpoint(gguf).names if "audio_tower" in n}
    assert all(d != "q8_0" for n, d in dtypes.items() if ".conv2d" in n)
    if not any(d == "q8_0" for d in dtypes.values()):
        pytest.skip("no encoder linear of this shape is a multiple of 32 wide")
    feats = load_audio_inputs(path, [clips["1.0s"]], 512)
    a = AudioEncoder.load(gguf).forward(feats)[enc.OUTPUT].astype(np.float64)
    b = enc.hf_activations(hf, [enc.OUTPUT], feats)[enc.OUTPUT].astype(np.float64)
    assert float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.999


@pytest.mark.parametrize("field, value, message", [
    ("encoder_layers", 0, r"encoder_layers.*must be in \[1, 1024\], got 0"),
    ("d_model", "16", r"d_model.*must be an integer, got str"),
    ("num_mel_bins", True, r"num_mel_bins.*must be an integer, got bool"),
    ("encoder_ffn_dim", 1 << 40, r"encoder_ffn_dim.*must be in"),
    ("n_window_infer", 150, r"n_window_infer.*multiple of 2 n_window \(100\)"),
    ("max_source_positions", None, r"missing field thinker_config\.audio_config\.max_source_positions"),
], ids=lambda v: str(v)[:20])
def test_audio_config_fields_are_range_checked(field, value, message):
    from omni_lab.errors import ConfigError
    from omni_lab.models.tiny_omni import AUDIO_PRESETS

    audio = dict(AUDIO_PRESETS["tiny"], output_dim=64, **{field: value})
    with pytest.raises(ConfigError, match=message):
        enc.AudioEncoderConfig.from_dict({"model_type": "qwen3_omni_moe", "thinker_config": {"audio_config": audio}})
