"""The Qwen3-Omni thinker text model on our kernels against Transformers (float32, same BF16 weights)."""

import json

import numpy as np
import pytest
import torch

from omni_lab.formats import omni_names
from omni_lab.formats.safetensors_io import CheckpointError
from omni_lab.models.thinker import LIVE, Qwen3OmniThinkerText, hf_activations
from omni_lab.models.tiny_omni import OMNI_PRESETS, build_tiny_omni
from omni_lab.reference import load_hf_model
from checkpoint_edits import edited_copy
from model_checks import assert_cached_decode_matches, assert_greedy_matches

PROMPT = np.array([5, 17, 200, 33, 8, 99, 150, 7, 3, 42, 301], np.int64)


@pytest.fixture(scope="module", params=[("tiny", 0), ("tiny-dense", 1), ("tiny-step2", 2)], ids=lambda p: f"{p[0]}-seed{p[1]}")
def checkpoint(request, tmp_path_factory):
    preset, seed = request.param
    return build_tiny_omni(tmp_path_factory.mktemp(preset) / "ckpt", seed=seed, preset=preset)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_omni(tmp_path_factory.mktemp("tiny0") / "ckpt", seed=3, preset="tiny")


def check_all_activations(path, ids, hf=None, grouped: bool = True):
    model = Qwen3OmniThinkerText.load(path, max_len=64)
    model.grouped_min_tokens = 2 if grouped else len(ids) + 1  # the prefill's experts grouped, or per pair
    names = list(model.activation_shapes(len(ids)))
    ours = model.forward(ids, start=0, taps=names)
    ref = hf_activations(hf or load_hf_model(path, "float32"), names, ids)
    assert list(ref) != [] and set(ref) == set(names)
    routers = 0
    for n in names:
        a, b = ours[n].astype(np.float64), ref[n].astype(np.float64)
        assert a.shape == b.shape, n
        if n.endswith(".mlp.router"):  # [T, 2k]: expert ids, then their weights
            k = a.shape[1] // 2
            same = a[:, :k] == b[:, :k]
            assert same.all(), f"{n}: experts agree on {int(same.sum())} of {same.size} (token, slot) pairs"
            np.testing.assert_allclose(a[:, k:], b[:, k:], rtol=0, atol=2e-6, err_msg=n)
            routers += 1
            continue
        cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
        mse = float(((a - b) ** 2).mean())
        assert cos >= 0.99999 and mse < 1e-5, f"{n}: cosine {cos:.7f}, mse {mse:.2e}"
    return model, routers


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "pairs"])
def test_every_activation_and_every_expert_choice_matches_transformers(checkpoint, grouped):
    model, routers = check_all_activations(checkpoint, PROMPT, grouped=grouped)
    cfg = model.cfg
    assert routers == sum(cfg.is_moe(i) for i in range(cfg.num_hidden_layers)) > 0
    if cfg.mlp_only_layers:  # the dense-layer preset really has a dense layer
        assert f"{LIVE}.layers.1.mlp.router" not in model.activation_shapes(1)


def test_greedy_tokens_match_transformers_except_near_ties(checkpoint):
    ours = Qwen3OmniThinkerText.load(checkpoint, max_len=64)
    hf = load_hf_model(checkpoint, "float32")
    n_new = 12
    out = hf.thinker.generate(input_ids=torch.as_tensor(PROMPT[None]), max_new_tokens=n_new, min_new_tokens=n_new,
                              do_sample=False, output_scores=True, return_dict_in_generate=True)
    assert_greedy_matches(ours.generate(PROMPT, n_new, stop_at_eos=False), out)


def test_decode_with_kv_cache_equals_fresh_prefill(tiny):
    assert_cached_decode_matches(Qwen3OmniThinkerText.load(tiny, max_len=32), PROMPT)


def test_a_decode_step_matches_transformers_at_every_activation(rt, checkpoint):
    """One cached decode token (T = 1: the experts' gate_up routes it, moe.routed_ok) against the last row of
    Transformers on the whole prompt, every activation and every expert choice (the route it writes)."""
    model = Qwen3OmniThinkerText.load(checkpoint, max_len=64)
    n = len(PROMPT) - 1
    model.forward(PROMPT[:n], start=0)
    names = list(model.activation_shapes(1))
    with rt.recording() as kernels:
        ours = model.forward(PROMPT[n:], start=n, taps=names)
    assert any(k.endswith(".gate_up_routed") for k in kernels) and not any(k.endswith(".route") for k in kernels)
    ref = hf_activations(load_hf_model(checkpoint, "float32"), names, PROMPT)
    for name in names:
        a, b = ours[name].astype(np.float64)[-1], ref[name].astype(np.float64)[-1]
        if name.endswith(".mlp.router"):  # expert ids, then their weights
            k = a.shape[0] // 2
            np.testing.assert_array_equal(a[:k], b[:k], err_msg=name)
            np.testing.assert_allclose(a[k:], b[k:], rtol=0, atol=2e-6, err_msg=name)
            continue
        cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cos >= 0.99999 and float(((a - b) ** 2).mean()) < 1e-5, f"{name}: cosine {cos:.7f}"


def test_q8_0_decode_routes_in_gate_up_and_quantizes_there(rt, tiny, tmp_path, monkeypatch):
    """A Q8_0 decode step: no moe.route and no quantize_act between the experts' gate_up and down, and the same
    expert choices and logits (to the act's int8 rounding) as the route / quantize_act path it replaces."""
    from omni_lab.formats.quantize import quantize_checkpoint
    from omni_lab.ops import moe

    gguf = quantize_checkpoint(tiny, tmp_path / "q8.gguf", progress=False)
    n = len(PROMPT) - 1
    runs = {}
    for routed in (True, False):
        if not routed:
            monkeypatch.setattr(moe, "routed_ok", lambda *args: False)
        model = Qwen3OmniThinkerText.load(gguf, max_len=32, progress=False)
        model.forward(PROMPT[:n], start=0)
        routers = [name for name in model.activation_shapes(1) if name.endswith(".mlp.router")]
        with rt.recording() as kernels, rt.profile() as prof:
            runs[routed] = model.forward(PROMPT[n:], start=n, taps=routers)
        order = [t.kernel.split("[")[0] for t in prof.timings]
        assert (("moe_sg.gate_up_q8_routed" in order or "moe.gate_up_q8_routed" in order) == routed
                and any(k.endswith(".route") for k in kernels) != routed)
        if routed:  # down reads gate_up's int8 blocks
            for i, kernel in enumerate(order):
                if kernel.endswith("gate_up_q8_routed"):
                    assert order[i + 1] == "moe.down_q8", order[i:i + 2]
    for name in routers:
        k = runs[True][name].shape[1] // 2
        np.testing.assert_array_equal(runs[True][name][:, :k], runs[False][name][:, :k], err_msg=name)
        np.testing.assert_array_equal(runs[True][name][:, k:], runs[False][name][:, k:], err_msg=name)
    a, b = runs[True]["logits"].astype(np.float64), runs[False]["logits"].astype(np.float64)
    assert float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.9999


def test_tiny_omni_speaks_through_transformers(tiny):
    """Every part is there: Transformers' own generate(return_audio=True) gives text and a waveform."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    hf = load_hf_model(tiny, "float32")
    text = tok.apply_chat_template([{"role": "user", "content": "Hello, world!"}], add_generation_prompt=True, tokenize=False)
    ids = tok(text, return_tensors="pt").input_ids
    cfg = json.loads((tiny / "config.json").read_text())
    assert ids[0, 1] == cfg["user_token_id"] and cfg["assistant_token_id"] in ids[0].tolist()
    assert max(v for k, v in cfg.items() if k.endswith("_token_id")) < cfg["thinker_config"]["text_config"]["vocab_size"]
    seq, wav = hf.generate(input_ids=ids, return_audio=True, thinker_max_new_tokens=6, thinker_do_sample=False,
                           talker_do_sample=False, talker_max_new_tokens=8, speaker="Ethan")
    assert seq.shape[1] > ids.shape[1]
    assert wav.ndim == 3 and wav.shape[-1] > 0 and torch.isfinite(wav).all() and float(wav.abs().max()) > 0


def test_checkpoint_layout_and_name_table(tiny):
    from safetensors import safe_open

    keys = set(safe_open(tiny / "model.safetensors", "pt").keys())
    # transformers 5.23 writes the released layout: per-expert keys under thinker.model.layers.
    assert omni_names.expert_key("up_proj", 1, 7) in keys and not omni_names.is_fused(keys)
    assert omni_names.text_key("layers.{i}.mlp.gate.weight", 0) in keys
    assert omni_names.live_name("thinker.model.layers.1.mlp.experts.7.up_proj.weight") == f"{LIVE}.layers.1.mlp.experts.up_proj[7]"
    assert omni_names.live_name("thinker.model.norm.weight") == f"{LIVE}.norm.weight"


def test_fused_expert_layout(tmp_path, tiny):
    """A checkpoint in the live Transformers 5 layout (text under `thinker.model.language_model.`, experts
    fused into gate_up_proj [E, 2F, D] and down_proj [E, D, F]) loads to the same model."""
    import re

    def fuse(t):
        experts = {}
        for key in [k for k in t if k.startswith("thinker.model.")]:
            m = re.match(r"thinker\.model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(\w+)\.weight$", key)
            if m:
                experts.setdefault(int(m[1]), {}).setdefault(m[3], {})[int(m[2])] = t.pop(key)
            else:
                t[key.replace("thinker.model.", omni_names.LIVE_TEXT, 1)] = t.pop(key)
        for i, w in experts.items():
            n = len(w["gate_proj"])
            t[omni_names.fused_expert_key("gate_up_proj", i)] = torch.stack(
                [torch.cat([w["gate_proj"][e], w["up_proj"][e]]) for e in range(n)])
            t[omni_names.fused_expert_key("down_proj", i)] = torch.stack([w["down_proj"][e] for e in range(n)])
    fused = edited_copy(tiny, tmp_path / "fused", fuse)
    from safetensors import safe_open

    assert omni_names.is_fused(safe_open(fused / "model.safetensors", "pt").keys())
    ids = PROMPT[:6]
    a = Qwen3OmniThinkerText.load(fused, max_len=16).forward(ids, start=0)["logits"]
    b = Qwen3OmniThinkerText.load(tiny, max_len=16).forward(ids, start=0)["logits"]
    np.testing.assert_array_equal(a, b)


def test_sharded_checkpoint_with_index(tmp_path, tiny):
    sharded = tmp_path / "sharded"
    hf = load_hf_model(tiny, "bfloat16")
    hf.save_pretrained(sharded, max_shard_size="200KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2 and omni_names.expert_key("gate_proj", 0, 0) in index["weight_map"]
    check_all_activations(sharded, PROMPT[:5], hf=load_hf_model(tiny, "float32"))
    victim = index["weight_map"][omni_names.expert_key("down_proj", 1, 5)]
    (sharded / victim).unlink()
    with pytest.raises(CheckpointError, match=f"names shard {victim}, which is absent"):
        Qwen3OmniThinkerText.load(sharded)


def test_bad_checkpoints_are_clear_errors(tmp_path, tiny):
    def variant(name, edit_tensors=None, edit_config=None):
        return edited_copy(tiny, tmp_path / name, edit_tensors, edit_config)

    missing = variant("missing", lambda t: t.pop("thinker.model.layers.1.mlp.experts.3.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"tensor 'thinker.model.layers.1.mlp.experts.3.up_proj.weight' is missing"):
        Qwen3OmniThinkerText.load(missing)

    def drop_expert_7(t):
        for k in [k for k in t if ".mlp.experts.7." in k]:
            t.pop(k)
    fewer = variant("fewer", drop_expert_7)
    with pytest.raises(CheckpointError, match=r"num_experts=8, but the checkpoint holds experts 0..6 \(7\) for layer 0; "
                                              r"first missing: 'thinker.model.layers.0.mlp.experts.7.gate_proj.weight'"):
        Qwen3OmniThinkerText.load(fewer)
    more = variant("more", edit_config=lambda c: c["thinker_config"]["text_config"].update(num_experts=6))
    with pytest.raises(CheckpointError, match=r"num_experts=6, but the checkpoint holds experts 0..7 \(8\) for layer 0; "
                                              r"unexpected: 'thinker.model.layers.0.mlp.experts.6.gate_proj.weight'"):
        Qwen3OmniThinkerText.load(more)
    d = OMNI_PRESETS["tiny"]["hidden_size"]
    wrong = variant("wrong", lambda t: t.update({"thinker.model.layers.0.mlp.gate.weight": torch.zeros(5, d, dtype=torch.bfloat16)}))
    with pytest.raises(CheckpointError, match=rf"'thinker.model.layers.0.mlp.gate.weight' has shape \[5, {d}\], expected \[8, {d}\]"):
        Qwen3OmniThinkerText.load(wrong)


def test_sampling_is_seeded_and_greedy_at_top_k_1(tiny):
    from omni_lab.models.sampling import Sampler

    model = Qwen3OmniThinkerText.load(tiny, max_len=64)
    a = model.generate(PROMPT, 8, Sampler(temperature=1.5, top_k=5, seed=1), stop_at_eos=False)
    b = model.generate(PROMPT, 8, Sampler(temperature=1.5, top_k=5, seed=1), stop_at_eos=False)
    assert a == b
    logits = model.forward(PROMPT, start=0)["logits"][-1]
    assert a[0] in np.argsort(-logits)[:5]
    assert model.generate(PROMPT, 5, Sampler(top_k=1), stop_at_eos=False) == model.generate(PROMPT, 5, stop_at_eos=False)


def test_tiny_omni_builds_are_reproducible_and_finite(tmp_path):
    """Transformers leaves the talker's expert weights uninitialised; the builder must draw them itself."""
    import torch
    from safetensors import safe_open

    from omni_lab.models.tiny_omni import build_tiny_omni

    a = safe_open(build_tiny_omni(tmp_path / "a", seed=3) / "model.safetensors", "pt")
    b = safe_open(build_tiny_omni(tmp_path / "b", seed=3) / "model.safetensors", "pt")
    for key in a.keys():
        ta, tb = a.get_tensor(key), b.get_tensor(key)
        assert torch.equal(ta, tb), f"{key} differs between two builds with the same seed"
        assert torch.isfinite(ta.float()).all(), key
