"""The code2wav vocoder on the Transformers side: config, activation names and shapes against the hooks,
the tiny checkpoints' drawn parameters, and what chunked_decode gives."""

import json

import numpy as np
import pytest
import torch

from omni_lab.models.code2wav import (Code2WavConfig, chunk_windows, code2wav_activations, hf_chunked_decode,
                                      hf_activations)
from omni_lab.models.config import ConfigError
from omni_lab.models.tiny_omni import (CODE2WAV_DRAWS, CODE2WAV_PRESETS, NUM_CODE_GROUPS, build_tiny_omni,
                                       code2wav_family)
from omni_lab.reference import load_hf_model

PRESETS = [("tiny", 0), ("tiny-dense", 1)]


@pytest.fixture(scope="module", params=PRESETS, ids=lambda p: f"{p[0]}-seed{p[1]}")
def tiny(request, tmp_path_factory):
    """(config, float32 HF model) of a tiny checkpoint."""
    preset, seed = request.param
    path = build_tiny_omni(tmp_path_factory.mktemp(preset) / "ckpt", seed=seed, preset=preset)
    cfg = Code2WavConfig.from_dict(json.loads((path / "config.json").read_text()), str(path))
    return preset, cfg, load_hf_model(path, "float32")


def random_codes(cfg: Code2WavConfig, frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, cfg.codebook_size, (cfg.num_quantizers, frames), dtype=np.int64)


def released_dict() -> dict:
    from transformers import Qwen3OmniMoeConfig

    return Qwen3OmniMoeConfig().to_dict()  # Transformers' defaults are the released model's shapes


def test_released_config_gives_1920_samples_per_frame():
    cfg = Code2WavConfig.from_dict(released_dict())
    tr = cfg.transformer
    assert (cfg.hidden_size, tr.num_hidden_layers, tr.num_attention_heads, tr.head_dim) == (1024, 8, 16, 64)
    assert (cfg.num_quantizers, cfg.codebook_size, tr.sliding_window, cfg.decoder_dim) == (16, 2048, 72, 1536)
    assert tr.layer_types == ("sliding_attention",) * 8 and tr.window(7) == 72 and tr.vocab_size == 16 * 2048
    assert cfg.upsampling_ratios == (2, 2) and cfg.upsample_rates == (8, 5, 4, 3) and tr.rope_theta == 10000.0
    assert cfg.samples_per_frame == 1920
    assert cfg.decoder_channels == (1536, 768, 384, 192, 96)
    # one-shot length: 4T after the ConvNeXt stages, then L -> (L - 1) r per decoder block
    assert cfg.waveform_samples(10) == ((((40 - 1) * 8 - 1) * 5 - 1) * 4 - 1) * 3 == 1920 * 10 - cfg.samples_lost
    assert cfg.samples_lost == 555


def test_config_reads_an_older_rope_theta_and_an_explicit_head_dim():
    d = released_dict()
    c = d["code2wav_config"]
    del c["rope_parameters"]
    c.update(rope_theta=5000, head_dim=32)
    cfg = Code2WavConfig.from_dict(d)
    assert cfg.transformer.rope_theta == 5000.0 and cfg.transformer.head_dim == 32


@pytest.mark.parametrize("field", ["upsample_rates", "num_quantizers", "sliding_window", "rms_norm_eps"])
def test_config_error_names_the_missing_field(field):
    d = released_dict()
    del d["code2wav_config"][field]
    with pytest.raises(ConfigError, match=rf"my.json: missing field code2wav_config\.{field}$"):
        Code2WavConfig.from_dict(d, "my.json")


def test_config_errors_for_what_the_vocoder_cannot_be():
    d = released_dict()
    with pytest.raises(ConfigError, match="missing field code2wav_config$"):
        Code2WavConfig.from_dict({**d, "code2wav_config": None}, "my.json")
    with pytest.raises(ConfigError, match="model_type 'qwen3'"):
        Code2WavConfig.from_dict({**d, "model_type": "qwen3"})
    d["code2wav_config"]["hidden_act"] = "gelu"
    with pytest.raises(ConfigError, match="code2wav_config.hidden_act: 'gelu' is not supported"):
        Code2WavConfig.from_dict(d)


def test_tiny_presets_have_every_stage_and_16_code_groups(tiny):
    preset, cfg, hf = tiny
    shape = CODE2WAV_PRESETS[preset]
    assert cfg.num_quantizers == NUM_CODE_GROUPS == 16 == hf.config.talker_config.num_code_groups
    assert cfg.upsample_rates == tuple(shape["upsample_rates"])
    assert cfg.transformer.num_hidden_layers == shape["num_hidden_layers"] >= 2
    assert len(cfg.upsampling_ratios) >= 2 and len(cfg.upsample_rates) >= 2 and cfg.decoder_channels[-1] >= 2
    assert cfg.transformer.sliding_window < 7  # shorter than the frames below: the window's mask is exercised


@pytest.mark.parametrize("frames", [7, 12])
def test_names_and_shapes_are_what_the_hooks_see(tiny, frames):
    _, cfg, hf = tiny
    specs = code2wav_activations(cfg, frames)
    codes = random_codes(cfg, frames)
    got = hf_activations(hf, None, codes)
    assert list(got) == [a.name for a in specs]  # same names, in the order the hooks fired
    for a in specs:
        assert got[a.name].shape == a.shape and got[a.name].dtype == np.float32, a.name
        assert np.isfinite(got[a.name]).all(), a.name
    wav = got["code2wav"]
    assert wav.shape == (cfg.waveform_samples(frames),) == (frames * cfg.samples_per_frame - cfg.samples_lost,)
    with torch.no_grad():
        direct = hf.code2wav(torch.as_tensor(codes)[None]).reshape(-1).numpy()
    np.testing.assert_array_equal(wav, direct)  # the hooks changed nothing
    # a waveform that shows its errors: far above Transformers' near-zero init, and almost never clamped
    assert 0.05 < np.abs(wav).max() < 1 and np.sqrt((wav ** 2).mean()) > 0.03


def test_a_subset_of_names_and_wrong_codes(tiny):
    _, cfg, hf = tiny
    names = ["code2wav.decoder.1", "code2wav.code_embedding.mean", "code2wav.pre_transformer.layers.0.mlp"]
    got = hf_activations(hf, names, random_codes(cfg, 5))
    assert list(got) == ["code2wav.code_embedding.mean", "code2wav.pre_transformer.layers.0.mlp", "code2wav.decoder.1"]
    with pytest.raises(ValueError, match=r"codes must be \[num_quantizers=16, frames\], got shape \(4, 5\)"):
        hf_activations(hf, None, random_codes(cfg, 5)[:4])


def test_every_drawn_parameter_moves_the_waveform(tiny):
    """Reset to Transformers' init, each drawn family changes the waveform by > 1e-2 (relative L2), and so
    does each drawn tensor on its own by > 1e-3: none of them is hidden the way Transformers' init hides them."""
    _, cfg, hf = tiny
    c2w = hf.code2wav
    codes = torch.as_tensor(random_codes(cfg, 7))[None]
    drawn = {n: p for n, p in c2w.named_parameters() if code2wav_family(n)}
    assert {code2wav_family(n) for n in drawn} == set(CODE2WAV_DRAWS)  # every family exists in this model
    with torch.no_grad():
        base = c2w(codes)

    def change(params) -> float:
        kept = [p.clone() for _, p in params]
        for name, p in params:
            p.fill_(CODE2WAV_DRAWS[code2wav_family(name)][1])
        moved = c2w(codes)
        for (_, p), k in zip(params, kept):
            p.copy_(k)
        return float((moved - base).norm() / base.norm())

    with torch.no_grad():
        for family in CODE2WAV_DRAWS:
            members = [(n, p) for n, p in drawn.items() if code2wav_family(n) == family]
            assert change(members) > 1e-2, family
        weakest = min((change([(n, p)]), n) for n, p in drawn.items())
        assert weakest[0] > 1e-3, weakest
        np.testing.assert_array_equal(c2w(codes), base)  # everything was put back


def test_chunked_decode_against_one_shot(tiny):
    """Transformers' chunked_decode: one chunk is the one-shot decode; more chunks each lose samples_lost
    samples at their end; with enough left context the rest is the one-shot waveform; with little it is not."""
    _, cfg, hf = tiny
    frames, chunk = 23, 5
    codes = random_codes(cfg, frames, seed=1)
    spf, lost = cfg.samples_per_frame, cfg.samples_lost
    one = hf_activations(hf, ["code2wav"], codes)["code2wav"]
    np.testing.assert_array_equal(hf_chunked_decode(hf, codes, 300, 25), one)

    # the cut, rebuilt from chunk_windows and one-shot decodes of each window: exactly what chunked_decode gives
    for left in (25, 2):
        windows = chunk_windows(frames, chunk, left)
        assert [w[1:] for w in windows] == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
        pieces = [hf_activations(hf, ["code2wav"], codes[:, first:end])["code2wav"][(start - first) * spf:]
                  for first, start, end in windows]
        np.testing.assert_array_equal(hf_chunked_decode(hf, codes, chunk, left), np.concatenate(pieces))

    full = hf_chunked_decode(hf, codes, chunk, left_context=25)  # 25 >= every start: each chunk sees all history
    windows = chunk_windows(frames, chunk, 25)
    assert full.size == frames * spf - len(windows) * lost
    skipped = np.concatenate([one[start * spf:end * spf - lost] for _, start, end in windows])
    np.testing.assert_allclose(full, skipped, rtol=0, atol=2e-5)  # causal: the gaps are the only difference

    # the tiny vocoder's receptive field is ~20 frames; 2 frames of context change the later chunks a lot
    short = hf_chunked_decode(hf, codes, chunk, left_context=2)
    assert np.linalg.norm(short - skipped) / np.linalg.norm(skipped) > 1e-2
