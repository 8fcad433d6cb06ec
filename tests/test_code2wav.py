"""code2wav on our kernels against Transformers' Qwen3OmniMoeCode2Wav (float32, the same BF16 weights):
every activation, module by module, and the waveform, on tiny vocoders whose every module moves it."""

import numpy as np
import pytest

from omni_lab.models.code2wav import PREFIX, Code2Wav, hf_activations
from omni_lab.models.component import ModelInputError
from omni_lab.models.tiny_omni import build_tiny_omni
from omni_lab.reference import load_hf_model


@pytest.fixture(scope="module", params=[("tiny", 0), ("tiny-dense", 1)], ids=lambda p: f"{p[0]}-seed{p[1]}")
def vocoder(request, tmp_path_factory):
    preset, seed = request.param
    path = build_tiny_omni(tmp_path_factory.mktemp(preset) / "ckpt", seed=seed, preset=preset)
    return Code2Wav.load(path, max_len=64), load_hf_model(path, "float32")


def random_codes(model, frames, seed=0):
    cfg = model.cfg
    return np.random.default_rng(seed).integers(0, cfg.codebook_size, (cfg.num_quantizers, frames), dtype=np.int64)


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def snr_db(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ours - ref) ** 2)))


@pytest.mark.parametrize("frames", [7, 12])
def test_every_activation_matches_transformers(vocoder, frames):
    model, hf = vocoder
    codes = random_codes(model, frames, seed=frames)
    names = [a.name for a in model.activations(frames)]
    ours = model.forward(codes, taps=names)
    ref = hf_activations(hf, names, codes)
    assert set(ref) == set(names)
    for n in names:
        assert ours[n].shape == ref[n].shape, n
        assert cosine(ours[n], ref[n]) >= 0.99999, f"{n}: cosine {cosine(ours[n], ref[n]):.7f}"
    assert snr_db(ours[PREFIX], ref[PREFIX]) >= 60.0
    # Untapped, the residual adds are fused into the convs: the same waveform.
    plain = model.forward(codes)[PREFIX]
    assert snr_db(plain, ref[PREFIX]) >= 60.0 and np.abs(plain).max() > 0.05


def test_codes_as_a_user_saves_them_and_bad_codes(vocoder):
    model, _ = vocoder
    codes = random_codes(model, 5)
    np.testing.assert_array_equal(model.forward(codes.T)[PREFIX], model.forward(codes)[PREFIX])  # [T, 16]
    q, n = model.cfg.num_quantizers, model.cfg.codebook_size
    bad = codes.copy()
    bad[3, 2] = n
    with pytest.raises(ModelInputError, match=rf"code {n} at codebook 3, frame 2 is outside \[0, {n}\)"):
        model.forward(bad)
    with pytest.raises(ModelInputError, match=rf"codes must be \[{q}, frames\] or \[frames, {q}\] \({q} codebooks\)"):
        model.forward(codes[:4])
    with pytest.raises(ModelInputError, match="zero frames"):
        model.forward(codes[:, :0])
    with pytest.raises(ModelInputError, match="must be integers"):
        model.forward(codes.astype(np.float32))


@pytest.mark.parametrize("frames,chunk,left", [(23, 5, 3), (17, 4, 6), (12, 12, 2), (9, 20, 4)])
def test_chunked_and_streamed_equal_transformers_chunked_decode(vocoder, frames, chunk, left):
    """Chunks of `chunk` frames with `left` frames of context (the context cuts inside a chunk's receptive
    field, so each chunk really is decoded on its own), one-shot when the chunk covers everything."""
    from omni_lab.models.code2wav import hf_chunked_decode

    model, hf = vocoder
    codes = random_codes(model, frames, seed=frames + chunk)
    ref = hf_chunked_decode(hf, codes, chunk, left)
    ours = model.chunked_decode(codes, chunk, left)
    assert ours.shape == ref.shape and snr_db(ours, ref) >= 60.0
    # Frames arriving one at a time, then in uneven blocks: the same pieces.
    one = list(model.stream(iter(codes.T), chunk, left))
    blocks = list(model.stream([codes.T[:3], codes.T[3:4], codes.T[4:]], chunk, left))
    assert [len(p) for p in one] == [len(p) for p in blocks]
    np.testing.assert_array_equal(np.concatenate(one), ours)
    np.testing.assert_array_equal(np.concatenate(blocks), ours)
    if frames <= chunk:
        assert len(one) == 1  # one chunk is the one-shot decode, the same dispatches
        np.testing.assert_array_equal(ours, model.forward(codes)[PREFIX])
