"""Checks shared by the model tests."""

import numpy as np
import torch


def assert_greedy_matches(tokens: list[int], hf_out) -> None:
    """Our greedy tokens equal Transformers' (a generate output with scores) up to the first near tie:
    where HF's top two logits are within 1e-4 either choice is right, and the paths part there."""
    hf_tokens = hf_out.sequences[0, -len(hf_out.scores):].tolist()
    for step, scores in enumerate(hf_out.scores):
        top2 = torch.topk(scores[0], 2).values
        if float(top2[0] - top2[1]) < 1e-4:
            return
        assert tokens[step] == hf_tokens[step], f"step {step}: ours {tokens[:step + 1]} vs HF {hf_tokens[:step + 1]}"
    assert tokens == hf_tokens


def assert_cached_decode_matches(model, prompt, n: int = 6) -> None:
    """Prefill of the first n tokens, then one cached decode step per token, gives a fresh prefill's logits."""
    full = model.forward(prompt, start=0)["logits"]
    first = model.forward(prompt[:n], start=0)["logits"]
    steps = [model.forward(prompt[i:i + 1], start=i)["logits"][0] for i in range(n, len(prompt))]
    np.testing.assert_allclose(first, full[:n], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.stack(steps), full[n:], rtol=0, atol=1e-5)
