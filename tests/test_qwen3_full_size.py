"""Qwen3-0.6B's exact shapes (random BF16 weights): every activation against Transformers in float32.

The slowest test of the suite (about two minutes on lavapipe): 28 layers, a 151936-row vocabulary whose
311 MB embedding table and tied LM head are bound in pieces past lavapipe's 128 MiB binding limit."""

import numpy as np
import torch

from omni_lab.models.qwen3 import Qwen3
from omni_lab.models.tiny import build_tiny_qwen3
from omni_lab.reference import capture, dense_qwen3_names, load_hf_model


def test_qwen3_0_6b_shapes_match_transformers(tmp_path):
    path = build_tiny_qwen3(tmp_path / "qwen3-0.6b", seed=0, preset="qwen3-0.6b")
    ids = np.array([5, 17, 200, 33, 8, 99, 150, 7], np.int64)
    model = Qwen3.load(path, max_len=16, progress=False)
    assert model.cfg.num_hidden_layers == 28 and model.cfg.vocab_size == 151936
    names = dense_qwen3_names(model.cfg.num_hidden_layers)
    ours = model.forward(ids, start=0, taps=names)
    del model
    ref = capture(load_hf_model(path, "float32"), names, {"input_ids": torch.as_tensor(ids[None])})
    for n in names:
        a, b = ours[n].astype(np.float64), ref[n].astype(np.float64)
        cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
        mse = float(((a - b) ** 2).mean())
        assert cos >= 0.99999 and mse < 1e-5, f"{n}: cosine {cos:.8f}, mse {mse:.2e}"
    assert (ours["lm_head"].argmax(-1) == ref["lm_head"].argmax(-1)).all()
