"""Q8_0 for code2wav: a tiny Qwen3-Omni quantized with `omni-lab quantize` vocodes from its GGUF (the linears as
Q8_0, the convolutions and the code embedding as stored), close to the BF16 checkpoint's waveform; the
quantization report of the vocoder end to end; and `--keep "code2wav.*"`, which must make the two waveforms
bit-identical where the default does not."""

import json

import numpy as np
import pytest

from omni_lab.compare.audio import WAVEFORM_BOUNDS, waveform_metrics
from omni_lab.formats.q8_0 import Q8Weight
from omni_lab.formats.safetensors_io import CheckpointError
from omni_lab.gpu import Tensor
from omni_lab.models.code2wav import PREFIX, Code2Wav
from omni_lab.models.tiny_omni import build_tiny_omni

FRAMES = 24


def quantize(src, out, *keep):
    from omni_lab.cli import main

    with np.errstate(all="ignore"):  # gguf divides by zero scales of all-zero blocks (and handles it)
        assert main(["quantize", str(src), str(out), "--no-progress", *(("--keep", *keep) if keep else ())]) == 0
    return out


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    """(checkpoint, its Q8_0 GGUF, the GGUF made with --keep 'code2wav.*', codes [16, FRAMES])."""
    root = tmp_path_factory.mktemp("quant_code2wav")
    src = build_tiny_omni(root / "ckpt", seed=0, preset="tiny")
    codes = np.random.default_rng(7).integers(0, 48, (16, FRAMES), dtype=np.int64)
    return src, quantize(src, root / "q8_0.gguf"), quantize(src, root / "keep.gguf", "code2wav.*"), codes


# ---- loading from the GGUF ------------------------------------------------------------------------------
def test_vocoder_from_the_q8_0_gguf_is_close_to_bf16(omni):
    src, gguf, _, codes = omni
    q = Code2Wav.load(gguf, max_len=64, progress=False)
    ref = Code2Wav.load(src, max_len=64, progress=False)
    m = waveform_metrics(q.forward(codes)[PREFIX], ref.forward(codes)[PREFIX])
    assert WAVEFORM_BOUNDS["q8_0"].violations(m) == [], m
    assert np.isfinite(m["snr_db"]) and m["max_abs"] > 0  # Q8_0 really ran: not the BF16 weights again
    # Its linears are Q8_0 where K allows (the tiny MLP's down_proj has K = 48), everything else as stored.
    for layer in q.transformer.layers:
        a = layer.self_attn
        assert all(isinstance(w, Q8Weight) for w in (a.q_proj, a.k_proj, a.v_proj, a.o_proj))
        assert isinstance(layer.mlp.gate_proj, Q8Weight) and isinstance(layer.mlp.up_proj, Q8Weight)
        assert isinstance(layer.mlp.down_proj, Tensor) and layer.mlp.down_proj.dtype == "bf16"
    for up, block in q.upsample:
        assert isinstance(block.pwconv1, Q8Weight) and isinstance(block.pwconv2, Q8Weight)
        assert up.weight.dtype == block.dwconv.weight.dtype == "bf16"
    assert q.code_embedding.dtype == "bf16" and q.decoder_out.weight.dtype == "bf16"


def test_a_gguf_with_a_q8_0_code_embedding_is_refused_by_name(omni, tmp_path, monkeypatch):
    """A GGUF written before the rule kept the code embedding as stored: the loader names the tensor instead
    of failing inside the gather's dtype check."""
    from omni_lab.formats import quantize as qz

    src = omni[0]
    monkeypatch.setattr(qz, "KEEP_AS_STORED", ())
    old = quantize(src, tmp_path / "old.gguf")
    with pytest.raises(CheckpointError, match=r"tensor 'code2wav.code_embedding.weight' is Q8_0, but its kernel reads "
                                              r"16-bit or f32 weights only; quantize the checkpoint again"):
        Code2Wav.load(old, max_len=16, progress=False)
