"""Capture from a tiny random Qwen3ForCausalLM: names, order, shapes, agreement with output_hidden_states."""

import numpy as np
import pytest
import torch
import transformers

from omni_lab.activations import Activation
from omni_lab.compare import compare_sets
from omni_lab.reference import (CaptureError, UnsafeWeightsError, capture, dense_qwen3_names, load_hf_model,
                                load_reference, save_reference, to_activation)

LAYERS, HIDDEN, VOCAB = 2, 64, 128


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    cfg = transformers.Qwen3Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        tie_word_embeddings=True)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_qwen3")
    transformers.Qwen3ForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(tiny_qwen3):
    return load_hf_model(tiny_qwen3, "float32")


IDS = torch.tensor([[3, 17, 99, 42, 5, 127, 0]])


def test_names_order_and_shapes(model):
    assert model.config._attn_implementation == "eager" and not model.training
    names = dense_qwen3_names(LAYERS)
    acts = capture(model, reversed(names), {"input_ids": IDS})  # order comes from execution, not the request
    assert list(acts) == names
    t = IDS.shape[1]
    for n, a in acts.items():
        assert a.dtype == np.float32
        assert a.shape == ((t, VOCAB) if n == "lm_head" else (t, HIDDEN)), n
    with_norms = dense_qwen3_names(LAYERS, norms=True)
    assert list(capture(model, with_norms, {"input_ids": IDS})) == with_norms


def test_agrees_with_output_hidden_states(model):
    names = dense_qwen3_names(LAYERS)
    acts = capture(model, names, {"input_ids": IDS})
    with torch.no_grad():
        out = model(input_ids=IDS, output_hidden_states=True)
    hs = [h[0].numpy() for h in out.hidden_states]
    assert len(hs) == LAYERS + 1
    # hidden_states[0] is the input of layer 0 (the embeddings), hidden_states[i + 1] the output of layer i ...
    np.testing.assert_array_equal(hs[0], acts["model.embed_tokens"])
    for i in range(LAYERS - 1):
        np.testing.assert_array_equal(hs[i + 1], acts[f"model.layers.{i}"])
    # ... except the last entry: Transformers 5 replaces it by last_hidden_state, which is after the final norm
    # (utils/output_capturing.py, tie_last_hidden_states). So hidden_states[-1] is model.norm, not the last
    # layer's residual stream; our hook on model.layers.{last} is the pre-norm value.
    np.testing.assert_array_equal(hs[-1], acts["model.norm"])
    assert not np.allclose(hs[-1], acts[f"model.layers.{LAYERS - 1}"])
    np.testing.assert_array_equal(out.logits[0].numpy(), acts["lm_head"])


def test_hooks_removed_and_errors(model):
    before = len(model.model.layers[0]._forward_hooks)
    capture(model, ["model.layers.0"], {"input_ids": IDS})
    assert len(model.model.layers[0]._forward_hooks) == before
    with pytest.raises(CaptureError, match="model.layers.9"):
        capture(model, ["model.layers.9"], {"input_ids": IDS})
    with pytest.raises(CaptureError, match="twice"):
        capture(model, ["lm_head", "lm_head"], {"input_ids": IDS})
    with pytest.raises(CaptureError, match="batch of 1"):
        capture(model, ["lm_head"], {"input_ids": IDS.repeat(2, 1)})
    assert len(model.model.layers[0]._forward_hooks) == before


def test_bf16_store_and_compare(tiny_qwen3, model, tmp_path):
    names = dense_qwen3_names(LAYERS)
    f32 = capture(model, names, {"input_ids": IDS})
    ref = load_reference(save_reference("tiny", f32, model_path=tiny_qwen3, inputs={"input_ids": IDS},
                                        dtype="float32", root=tmp_path),
                         expect_model=tiny_qwen3, expect_inputs={"input_ids": IDS})
    assert compare_sets(f32, ref).passed

    bf16 = load_hf_model(tiny_qwen3, "bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    low = capture(bf16, names, {"input_ids": IDS})
    assert all(a.dtype == np.float32 for a in low.values())
    c = compare_sets(low, ref)
    assert c.dtype == "float32"
    assert all(r.cosine > 0.99 for r in c.rows)  # bf16 rounding, not a different computation
    assert max(r.nmse for r in c.rows) > 1e-7


def test_refuses_pickle_only_checkpoint(tiny_qwen3, tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text((tiny_qwen3 / "config.json").read_text())
    (d / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(UnsafeWeightsError, match="pytorch_model.bin"):
        load_hf_model(d)
    with pytest.raises(ValueError, match="dtype"):
        load_hf_model(tiny_qwen3, "float16")


class Vocoder(torch.nn.Module):
    """A vocoder's shape: a convolution [1, C, T], then a flat waveform [1, 1, N]."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(2, 3, 1)
        self.out = torch.nn.Identity()

    def forward(self, x):
        return self.out(self.conv(x).reshape(1, 1, -1))


def test_typed_capture_of_a_conv_and_a_waveform():
    x = torch.randn(1, 2, 10)
    specs = [Activation("conv", (3, 10), "CT"), Activation("out", (30,), "N", "waveform")]
    acts = capture(Vocoder(), ["conv", "out"], {"x": x}, specs=specs)
    assert acts["conv"].shape == (3, 10) and acts["out"].shape == (30,)
    np.testing.assert_array_equal(acts["out"], acts["conv"].reshape(-1))
    assert capture(Vocoder(), ["out"], {"x": x})["out"].shape == (1, 30)  # untyped: [1, T, ...] -> [T, F]
    with pytest.raises(CaptureError, match="flat signal needs a batch of 1"):
        to_activation("out", torch.zeros(2, 1, 30), "N")
