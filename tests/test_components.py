"""The component base on the thinker: GPU exports through prefill and replayed decode, embeddings as
input, a layer hook against the same hook on Transformers, plan keys, the model registry. (The export
kernel, copy.rows_at_step, is checked against numpy with the other ops, in ops/copy.py's cases.)"""

import numpy as np
import pytest
import torch

from omni_lab.gpu import runtime
from omni_lab.models import registry
from omni_lab.models.component import ModelInputError
from omni_lab.models.config import ConfigError
from omni_lab.models.layers import LayerHook
from omni_lab.models.thinker import LIVE, Qwen3OmniThinkerText, hf_activations
from omni_lab.models.tiny_omni import build_tiny_omni
from omni_lab.ops import copy
from omni_lab.reference import load_hf_model

PROMPT = np.array([5, 17, 200, 33, 8, 99, 150, 7, 3], np.int64)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_omni(tmp_path_factory.mktemp("components") / "ckpt", seed=5, preset="tiny-dense")


@pytest.fixture(scope="module")
def hf(ckpt):
    return load_hf_model(ckpt, "float32")


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_export_fills_rows_of_prefill_and_replayed_decode_steps(ckpt, hf):
    """An exported layer output lands, inside the recorded steps, at every position the model ran: the
    prompt's rows from the prefill and one row per decode step, the decode steps replayed from their
    plan. Its rows equal Transformers' hidden states of the prompt plus the generated tokens."""
    model = Qwen3OmniThinkerText.load(ckpt, max_len=32)
    name = f"{LIVE}.layers.1"
    buf = model.export(name)
    out = model.generate(PROMPT, 6, stop_at_eos=False)
    assert any(k[:2] == ("next_token", 1) for k in model._plans), "decode steps were not replayed from a plan"
    # The last generated token is never fed back, so the export holds the prompt and the first 5 tokens.
    seq = np.concatenate([PROMPT, out[:-1]])
    rows = buf.numpy()[: len(seq)]
    ref = hf_activations(hf, [name], seq)[name]
    assert rows.shape == ref.shape
    for t in range(len(seq)):
        assert cosine(rows[t], ref[t]) > 0.99999, f"export row {t}"
    with pytest.raises(ModelInputError, match="exports are"):
        model.export(f"{LIVE}.layers.0.mlp.router")


def test_embeddings_from_another_component_on_the_gpu(ckpt):
    """forward(embeds=...) reads a GPU tensor that another step wrote, and gives the same logits as ids."""
    model = Qwen3OmniThinkerText.load(ckpt, max_len=32)
    by_ids = model.forward(PROMPT, start=0)["logits"]
    rt = runtime()
    from omni_lab.ops import embedding

    embeds = embedding.embedding(rt.upload(PROMPT.astype(np.int32), "i32"), model.embed_tokens)
    by_embeds = model.forward(embeds=embeds, start=0)["logits"]
    np.testing.assert_array_equal(by_embeds, by_ids)
    with pytest.raises(ModelInputError, match="not both"):
        model.forward(PROMPT, embeds=embeds)


class AddVector(LayerHook):
    """Adds one vector to every row of the residual stream (the shape of DeepStack's injection)."""

    def __init__(self, v: np.ndarray):
        self.v = runtime().upload(v)

    def __call__(self, h, ctx):
        from omni_lab.ops import elementwise

        return elementwise.add(h, self.v, out=h)


def test_layer_hook_matches_the_same_hook_on_transformers(ckpt, hf):
    model = Qwen3OmniThinkerText.load(ckpt, max_len=32)
    v = np.random.default_rng(0).standard_normal(model.cfg.hidden_size).astype(np.float32)
    model.hooks[0] = AddVector(v)
    names = [a.name for a in model.activations(len(PROMPT)) if a.kind == "float"]
    ours = model.forward(PROMPT, start=0, taps=names)
    layer0 = hf.thinker.model.language_model.layers[0]
    handle = layer0.register_forward_hook(lambda m, args, out: out + torch.from_numpy(v))
    try:
        ref = hf_activations(hf, names, PROMPT)
    finally:
        handle.remove()
    for n in names:
        assert cosine(ours[n], ref[n]) > 0.99999, n
    plain = hf_activations(hf, [f"{LIVE}.layers.1"], PROMPT)[f"{LIVE}.layers.1"]
    assert cosine(plain, ref[f"{LIVE}.layers.1"]) < 0.999, "the hook did not move the model"


def test_plan_keys_keep_different_steps_apart(ckpt):
    """Two steps recorded under different keys replay as themselves; one key replays what it recorded."""
    model = Qwen3OmniThinkerText.load(ckpt, max_len=8)
    rt = runtime()
    a, b = rt.upload(np.ones(4, np.float32)), rt.upload(np.full(4, 2.0, np.float32))
    out = rt.empty((4,))
    assert model.plan(("copy", "a"), lambda: copy.copy(a, out), (out,))[0].tolist() == [1] * 4
    assert model.plan(("copy", "b"), lambda: copy.copy(b, out), (out,))[0].tolist() == [2] * 4
    rt.write(a, np.full(4, 3.0, np.float32))
    assert model.plan(("copy", "a"), lambda: pytest.fail("replayed, not recorded"), (out,))[0].tolist() == [3] * 4


def test_registry_names_what_it_runs(ckpt, tmp_path):
    entry = registry.entry_for({"model_type": "qwen3_omni_moe"})
    assert entry.component_class() is Qwen3OmniThinkerText
    specs = registry.activation_specs(ckpt, 3)
    assert specs[0].name == f"{LIVE}.embed_tokens" and specs[-1].name == "thinker.lm_head"
    routing = [a for a in specs if a.kind == "routing"]
    assert routing and all(a.shape == (3, 6) for a in routing)  # tiny-dense: top 3 of 8 experts
    with pytest.raises(ConfigError, match="model_type 'llama4' is not supported"):
        registry.entry_for({"model_type": "llama4"})
    with pytest.raises(ConfigError, match="no component 'vocoder' here"):
        registry.entry_for({"model_type": "qwen3_omni_moe"}, "vocoder")


def test_compare_judges_the_routers_expert_ids_exactly(ckpt, tmp_path):
    """What `omni-lab compare` runs, on a tiny Omni: each router's expert ids are an exact count of equal
    choices (not a cosine), its weights floats, and the stored reference keeps those types."""
    import json

    from omni_lab.workbench import compare_model

    out = tmp_path / "report"
    comparison, _, timing = compare_model(ckpt, PROMPT, out, root=tmp_path / "refs")
    assert comparison.passed
    data = json.loads((out / "report.json").read_text())
    routers = [r for r in data["activations"] if r["name"].endswith(".mlp.router")]
    k = 3  # tiny-dense routes each token to 3 of 8 experts
    assert routers and all(r["kind"] == "routing" and r["equal"] == r["total"] == len(PROMPT) * k for r in routers)
    assert data["model"] == str(ckpt) and set(data["timing"]) == {"reference_s", "ours_s", "compare_s"}
    (manifest,) = (tmp_path / "refs").glob("*/manifest.json")
    kinds = json.loads(manifest.read_text())["activations"]
    assert {kinds[r["name"]]["kind"] for r in routers} == {"routing"}


def test_moe_with_the_gated_shared_expert_matches_the_talkers_block(tmp_path):
    """MoeMlp with a shared expert (the talker's sparse MoE block: routed experts plus sigmoid(x . g) *
    shared(x)) against Transformers' Qwen3OmniMoeTalkerTextSparseMoeBlock, with the tiny Omni's talker
    weights loaded by our loader."""
    from types import SimpleNamespace

    from omni_lab.formats import omni_names
    from omni_lab.models.config import DecoderConfig
    from omni_lab.models.decoder import Decoder
    from omni_lab.models.loaders import Keys, load_moe_mlp
    from omni_lab.models.registry import open_checkpoint

    path = build_tiny_omni(tmp_path / "ckpt", seed=4, preset="tiny")
    hf = load_hf_model(path, "float32")
    live = hf.config.talker_config.text_config.to_dict()
    cfg = DecoderConfig.from_dict(live, "talker", mrope=True, moe=True)
    assert cfg.shared_expert_intermediate_size > 0 and cfg.num_experts > 0
    ckpt = open_checkpoint(path)
    rt = runtime()
    t = 7
    x = np.random.default_rng(1).standard_normal((t, cfg.hidden_size)).astype(np.float32)
    for layer in range(cfg.num_hidden_layers):
        mlp = load_moe_mlp(ckpt, Keys("talker.model.", omni_names.layout_of(ckpt.names)), layer, cfg)
        assert mlp.shared_expert is not None
        s = SimpleNamespace(**{n: rt.empty(shape, dtype) for n, (shape, dtype) in
                               Decoder.scratch_shapes(SimpleNamespace(cfg=cfg), t, 1).items()})
        from omni_lab.models.component import StepContext

        ours = mlp(rt.upload(x), StepContext(t, s, rt.empty((4,), "u32")), rt.empty((t, cfg.hidden_size))).numpy()
        with torch.no_grad():
            ref = hf.talker.model.layers[layer].mlp(torch.from_numpy(x)[None])[0].numpy()
        assert cosine(ours, ref) > 0.99999, f"layer {layer}: cosine {cosine(ours, ref):.7f}"
        np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5)
        # the shared expert matters: without its gated term the block is another function
        with torch.no_grad():
            block = hf.talker.model.layers[layer].mlp
            shared = torch.sigmoid(block.shared_expert_gate(torch.from_numpy(x))) * block.shared_expert(torch.from_numpy(x))
        assert float(shared.abs().max()) > 1e-2
