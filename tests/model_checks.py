"""Checks shared by the model tests."""

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
