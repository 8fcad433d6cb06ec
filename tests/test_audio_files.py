"""A cut audio file is refused by name with what is missing (formats/audio_file.py, models/audio_in.read_audio):
soundfile alone reads a cut WAV or Ogg short without a word. Whole files of the same containers still read."""

import numpy as np
import pytest
import soundfile as sf

from omni_lab.formats.audio_file import truncation
from omni_lab.models.audio_in import AudioFileError, read_audio

WAVE = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
CONTAINERS = [("WAV", "PCM_16", "wav"), ("WAV", "FLOAT", "wav"), ("WAVEX", "PCM_24", "wav"), ("RF64", "PCM_16", "wav"),
              ("OGG", "VORBIS", "ogg"), ("OGG", "OPUS", "ogg"), ("FLAC", "PCM_16", "flac")]


@pytest.mark.parametrize("fmt,subtype,ext", CONTAINERS)
def test_whole_files_read_and_cut_ones_are_refused(tmp_path, fmt, subtype, ext):
    whole = tmp_path / f"whole.{ext}"
    sf.write(whole, WAVE, 16000, format=fmt, subtype=subtype)
    assert truncation(whole) is None and read_audio(whole).size > 0
    raw = whole.read_bytes()
    for keep in (len(raw) - 1, len(raw) * 2 // 3, len(raw) // 3):
        cut = tmp_path / f"cut-{keep}.{ext}"
        cut.write_bytes(raw[:keep])
        with pytest.raises(AudioFileError) as e:
            read_audio(cut)
        assert str(cut) in str(e.value)
        if ext == "flac":  # libsndfile itself refuses a cut FLAC (the decoder loses sync)
            assert "not an audio file soundfile can read" in str(e.value)
        else:
            msg = str(e.value)
            assert "the file is truncated" in msg and ("missing" in msg or "end-of-stream" in msg), msg


def test_wav_shortfall_is_counted_in_bytes_and_frames(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, WAVE, 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:-1000])  # 500 frames of 2 bytes
    with pytest.raises(AudioFileError, match=r"declares 16000 bytes, 1000 of them are missing \(500 of 8000 frames\)"):
        read_audio(path)


def test_ogg_cut_at_a_page_boundary_lacks_its_end_mark(tmp_path):
    path = tmp_path / "a.ogg"
    wave = np.tile(WAVE, 4)  # pages enough that the cut one leaves some audio
    sf.write(path, wave, 16000)
    raw = path.read_bytes()
    path.write_bytes(raw[:raw.rindex(b"OggS")])  # whole pages, the last one gone
    assert 0 < sf.read(path)[0].shape[0] < wave.size  # what soundfile alone does
    with pytest.raises(AudioFileError, match="not marked end-of-stream"):
        read_audio(path)


def test_streamed_wav_of_unknown_size_is_not_called_cut(tmp_path):
    """A streaming writer leaves the data size at 0xFFFFFFFF: unknown, not a shortfall."""
    path = tmp_path / "a.wav"
    sf.write(path, WAVE, 16000, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data") + 4
    raw[at:at + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(raw)
    assert read_audio(path).size == WAVE.size
