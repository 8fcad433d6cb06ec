"""Dense Qwen3 on our kernels against Transformers (float32, same BF16 weights), layer by layer."""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from omni_lab.formats.safetensors_io import CheckpointError
from omni_lab.models.config import ConfigError
from omni_lab.models.qwen3 import ModelInputError, Qwen3
from omni_lab.models.sampling import Sampler
from omni_lab.models.tiny import build_tiny_qwen3
from omni_lab.reference import capture, dense_qwen3_names, load_hf_model
from checkpoint_edits import edited_copy
from model_checks import assert_cached_decode_matches, assert_greedy_matches

PROMPT = np.array([5, 17, 200, 33, 8, 99, 150, 7, 3, 42, 301], np.int64)


@pytest.fixture(scope="module", params=[("tiny", 0), ("tiny-gqa", 1), ("tiny", 7), ("tiny-hd32", 2)],
                ids=lambda p: f"{p[0]}-seed{p[1]}")
def checkpoint(request, tmp_path_factory):
    preset, seed = request.param
    return build_tiny_qwen3(tmp_path_factory.mktemp(preset) / "ckpt", seed=seed, preset=preset)


def check_all_activations(path, ids, max_len=64):
    ours_model = Qwen3.load(path, max_len=max_len, progress=False)
    names = dense_qwen3_names(ours_model.cfg.num_hidden_layers)
    ours = ours_model.forward(ids, start=0, taps=names)
    ref = capture(load_hf_model(path, "float32"), names, {"input_ids": torch.as_tensor(ids[None])})
    for n in names:
        a, b = ours[n].astype(np.float64), ref[n].astype(np.float64)
        assert a.shape == b.shape, n
        cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
        mse = float(((a - b) ** 2).mean())
        assert cos >= 0.99999 and mse < 1e-5, f"{n}: cosine {cos:.7f}, mse {mse:.2e}"
    return ours_model, ours


def test_every_activation_matches_transformers(checkpoint):
    check_all_activations(checkpoint, PROMPT)


def test_greedy_run_ahead_stops_at_eos_and_keeps_the_cache(tmp_path):
    """Greedy decode submits steps ahead of reading tokens: it must still stop at the first EOS, leave
    `length` at the tokens really consumed, and its tokens must be the step-by-step argmax."""
    path = build_tiny_qwen3(tmp_path / "ckpt", seed=2)
    model = Qwen3.load(path, max_len=64, progress=False)
    free = model.generate(PROMPT, 10, stop_at_eos=False)
    ids = list(PROMPT)
    for _ in range(10):  # one full forward per token: no cache, no run-ahead
        ids.append(int(model.forward(np.array(ids), start=0)["logits"][-1].argmax()))
    assert free == ids[len(PROMPT):]
    stop = 4
    eos = free[stop]
    assert eos not in free[:stop]
    model.cfg = dataclasses.replace(model.cfg, eos_token_id=eos)
    out = model.generate(PROMPT, 10)
    assert out == free[:stop + 1]
    assert model.length == len(PROMPT) + len(out) - 1
    # Continuing from the cache equals a fresh forward over everything so far.
    cont = model.forward(np.array([out[-1]]), start=None)["logits"][-1]
    fresh = model.forward(np.concatenate([PROMPT, out]), start=0)["logits"][-1]
    np.testing.assert_allclose(cont, fresh, rtol=0, atol=1e-5)


def test_greedy_tokens_match_transformers_except_near_ties(checkpoint):
    ours = Qwen3.load(checkpoint, max_len=64, progress=False)
    hf = load_hf_model(checkpoint, "float32")
    n_new = 20
    out = hf.generate(torch.as_tensor(PROMPT[None]), max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                      output_scores=True, return_dict_in_generate=True)
    assert_greedy_matches(ours.generate(PROMPT, n_new, stop_at_eos=False), out)


def test_decode_with_kv_cache_equals_fresh_prefill(checkpoint):
    assert_cached_decode_matches(Qwen3.load(checkpoint, max_len=32, progress=False), PROMPT)


def test_sampling_is_seeded_and_stays_in_top_k(checkpoint):
    model = Qwen3.load(checkpoint, max_len=64, progress=False)
    a = model.generate(PROMPT, 12, Sampler(temperature=1.5, top_k=5, seed=1), stop_at_eos=False)
    b = model.generate(PROMPT, 12, Sampler(temperature=1.5, top_k=5, seed=1), stop_at_eos=False)
    c = model.generate(PROMPT, 12, Sampler(temperature=1.5, top_k=5, seed=2), stop_at_eos=False)
    assert a == b and a != c
    # The first sampled token is among the HF model's 5 most likely next tokens.
    logits = load_hf_model(checkpoint, "float32")(torch.as_tensor(PROMPT[None])).logits[0, -1]
    assert a[0] in torch.topk(logits, 5).indices.tolist()
    # top_k=1 is greedy.
    assert model.generate(PROMPT, 6, Sampler(top_k=1), stop_at_eos=False) == model.generate(PROMPT, 6, stop_at_eos=False)


def test_sharded_checkpoint_with_index(tmp_path):
    src = build_tiny_qwen3(tmp_path / "single", seed=2)
    sharded = tmp_path / "sharded"
    load_hf_model(src, "bfloat16").save_pretrained(sharded, max_shard_size="40KB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, sharded / f)
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 2
    check_all_activations(sharded, PROMPT[:5])
    victim = sorted(sharded.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"names shard {victim.name}, which is absent"):
        Qwen3.load(sharded, progress=False)


def test_bad_checkpoints_and_inputs_are_clear_errors(tmp_path):
    good = build_tiny_qwen3(tmp_path / "good", seed=0)
    model = Qwen3.load(good, max_len=16, progress=False)
    with pytest.raises(ModelInputError, match="token id 384 is outside the vocabulary"):
        model.generate([1, 384], 2)
    with pytest.raises(ModelInputError, match="exceed"):
        model.generate([1, 2], 20)

    def variant(name, edit_tensors=None, edit_config=None):
        return edited_copy(good, tmp_path / name, edit_tensors, edit_config)

    missing = variant("missing", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match="tensor 'model.layers.1.mlp.up_proj.weight' is missing"):
        Qwen3.load(missing, progress=False)
    wrong = variant("wrong", lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(8, 64, dtype=torch.bfloat16)}))
    with pytest.raises(CheckpointError, match=r"'model.layers.0.self_attn.k_proj.weight' has shape \[8, 64\], expected \[32, 64\]"):
        Qwen3.load(wrong, progress=False)
    unknown = variant("unknown", edit_config=lambda c: c.update(model_type="llama4"))
    with pytest.raises(ConfigError, match="model_type 'llama4'"):
        Qwen3.load(unknown, progress=False)
    pickle_dir = tmp_path / "pickle"
    pickle_dir.mkdir()
    shutil.copy(good / "config.json", pickle_dir / "config.json")
    (pickle_dir / "pytorch_model.bin").write_bytes(b"not loaded: refusing happens before any read")
    with pytest.raises(CheckpointError, match=r"only pickle weights \(pytorch_model.bin\)"):
        Qwen3.load(pickle_dir, progress=False)


def test_cli_generate_json_and_errors(tmp_path):
    ckpt = build_tiny_qwen3(tmp_path / "m", seed=4)
    run = lambda *a: subprocess.run([sys.executable, "-m", "omni_lab.cli", *a], capture_output=True, text=True)  # noqa: E731
    r = run("generate", "--model", str(ckpt), "--prompt", "Привет, мир", "--max-new-tokens", "5", "--greedy", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["tokens"]) == 5 and isinstance(out["text"], str)
    ref = load_hf_model(ckpt, "float32").generate(torch.as_tensor([out["prompt_ids"]]), max_new_tokens=5,
                                                    min_new_tokens=5, do_sample=False)[0, len(out["prompt_ids"]):]
    assert out["tokens"][0] == int(ref[0])
    r = run("generate", "--model", str(ckpt), "--prompt-ids", "1,2,100000", "--max-new-tokens", "2")
    assert r.returncode == 2 and "token id 100000 is outside the vocabulary" in r.stderr
    r = run("generate", "--model", str(tmp_path / "nowhere"), "--prompt-ids", "1", "--max-new-tokens", "2")
    assert r.returncode == 2 and "nowhere" in r.stderr


def test_q8_0_gguf_runs_and_stays_close_to_bf16(tmp_path):
    """The default quantizer output (embedding table and tied head quantized too) through the model."""
    from omni_lab.formats.quantize import quantize_checkpoint

    src = build_tiny_qwen3(tmp_path / "bf16", seed=5)
    gguf = quantize_checkpoint(src, tmp_path / "model.q8_0.gguf", progress=False)
    ours_q8 = Qwen3.load(gguf, max_len=32, progress=False)
    assert not isinstance(ours_q8.lm_head, type(ours_q8.norm))  # the tied head stays Q8_0
    q8 = ours_q8.forward(PROMPT, start=0)["logits"].astype(np.float64)
    with torch.no_grad():
        ref = load_hf_model(src, "float32")(torch.as_tensor(PROMPT[None])).logits[0].double().numpy()
    nmse = ((q8 - ref) ** 2).sum() / (ref ** 2).sum()
    assert nmse < 5e-3, nmse
    p, q = (np.exp(z - z.max(-1, keepdims=True)) for z in (ref, q8))
    p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
    kl = (p * (np.log(p) - np.log(q))).sum(-1)
    assert kl.mean() < 5e-3, kl
    assert (q8.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def decode_kernels(model) -> list[str]:
    """The kernels of one recorded decode step of `model` (generate records it), in order."""
    model.generate(PROMPT[:4], 3, stop_at_eos=False)
    (plan,) = [p for k, p in model._plans.items() if k[:2] == ("next_token", 1)]
    return [d.kernel.name for d in plan]


def test_decode_attention_norms_rotates_appends_and_quantizes_in_one_dispatch(tmp_path):
    """At decode each layer's QK norm, rotation and cache append run inside the attention dispatch
    (attention_rope.decode), and with Q8_0 on int8 products (head dim 32: whole blocks a head) it also writes
    o_proj's int8 input (decode_q8), so no quantize pass runs before o_proj: one dispatch fewer a layer in BF16,
    two in Q8_0, than the separate norm_rope_append (and quantize_act), with the logits of a fresh prefill."""
    from omni_lab.formats.quantize import quantize_checkpoint
    from omni_lab.gpu import tuning

    src = build_tiny_qwen3(tmp_path / "bf16", seed=4, preset="tiny-hd32")
    gguf = quantize_checkpoint(src, tmp_path / "model.q8_0.gguf", progress=False)
    layers = 2
    with tuning.override(q8_matvec_path="dot4", attention_norm_rope=True):  # off in the H200's table
        for path, entry, saved in ((src, "decode", 1), (gguf, "decode_q8", 2)):
            model = Qwen3.load(path, max_len=32, progress=False)
            fused = decode_kernels(model)
            assert [k.split(".")[1] for k in fused if k.startswith("attention_rope")] == [entry] * layers
            assert not any(k.startswith(("rope", "attention.", "attention_sg.")) for k in fused)
            assert_cached_decode_matches(model, PROMPT)
            with tuning.override(attention_norm_rope=False):
                separate = decode_kernels(Qwen3.load(path, max_len=32, progress=False))
            assert len(separate) - len(fused) == saved * layers
            if entry == "decode_q8":
                count = lambda ks: sum(k == "q8_0.quantize_act" for k in ks)  # noqa: E731
                assert count(separate) - count(fused) == layers


def test_text_prompt_through_a_gguf_uses_its_own_tokenizer(tmp_path):
    from omni_lab.formats.quantize import quantize_checkpoint
    from omni_lab.workbench import prompt_ids

    src = build_tiny_qwen3(tmp_path / "bf16", seed=6)
    gguf = quantize_checkpoint(src, tmp_path / "m.gguf", progress=False)
    assert prompt_ids(gguf, prompt="Привет, мир").tolist() == prompt_ids(src, prompt="Привет, мир").tolist()
