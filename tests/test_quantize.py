"""The streaming quantizer: a tiny Qwen3 checkpoint (with a tokenizer) to GGUF and back, the rules for what
stays unquantized, chunking, sharded input, the CLI, and crash safety (no file under the final name)."""

import argparse
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from omni_lab.formats import names, quantize as qz
from omni_lab.formats.gguf_io import GGUFCheckpoint
from omni_lab.formats.q8_0 import quantize_q8_0
from omni_lab.formats.safetensors_io import Checkpoint
from omni_lab.gpu.buffers import bf16_to_f32

REPO = Path(__file__).resolve().parents[1]


def build_tokenizer(path: Path) -> dict:
    """A tiny byte-level BPE in the Qwen style, trained offline: special <|...|> tokens and one
    non-special added token, like Qwen3's <think>."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=280, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["hello world, the quick brown fox jumps over the lazy dog"] * 20, trainer)
    tok.add_tokens([AddedToken("<think>", special=False, normalized=False)])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    return tok.get_vocab(with_added_tokens=True)


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    d = tmp_path_factory.mktemp("tiny_qwen3")
    vocab = build_tokenizer(d)
    config = Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
                         eos_token_id=vocab["<|im_end|>"], tie_word_embeddings=False)
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(d)
    return d, vocab


def test_tiny_qwen3_round_trip(tiny_qwen3, tmp_path):
    src, vocab = tiny_qwen3
    out = qz.quantize_checkpoint(src, tmp_path / "tiny.gguf", progress=False)
    assert out == tmp_path / "tiny.gguf" and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]
    ck, g = Checkpoint(src), GGUFCheckpoint(out, architecture="qwen3")
    assert g.config == ck.config
    assert g.names == ck.names
    for name in ck.names:
        assert g.shape(name) == ck.shape(name), name
        if len(ck.shape(name)) == 1:
            assert g.dtype(name) == "f32" and np.array_equal(g.get_f32(name), ck.get_f32(name)), name
        else:
            assert g.dtype(name) == "q8_0", name
            assert g.get(name)[0].tobytes() == quantize_q8_0(ck.get_f32(name)).tobytes(), name
    assert g.gguf_name("model.layers.1.self_attn.q_norm.weight") == "blk.1.attn_q_norm.weight"
    # llama.cpp's keys
    assert g.field("general.file_type") == 7 and g.field("qwen3.block_count") == 2
    assert g.field("qwen3.attention.head_count_kv") == 2 and g.field("qwen3.rope.freq_base") == 10000.0
    assert g.field("tokenizer.ggml.model") == "gpt2" and g.field("tokenizer.ggml.pre") == "qwen2"
    tokens, types = g.field("tokenizer.ggml.tokens"), g.field("tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == 300
    by_id = {i: t for t, i in vocab.items()}
    assert tokens[:len(by_id)] == [by_id[i] for i in range(len(by_id))] and tokens[-1] == "[PAD299]"
    assert types[vocab["<|im_end|>"]] == 3 and types[vocab["<think>"]] == 4 and types[-1] == 5
    merges = json.loads((src / "tokenizer.json").read_text())["model"]["merges"]
    assert len(g.field("tokenizer.ggml.merges")) == len(merges)
    assert g.field("tokenizer.ggml.eos_token_id") == vocab["<|im_end|>"]
    assert g.tokenizer_json == (src / "tokenizer.json").read_text()


def test_keep_patterns_and_unquantizable_tensors(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "qwen3_omni_moe"}))
    rng = np.random.default_rng(0)
    t = {
        "a.proj.weight": torch.randn(64, 64).to(torch.bfloat16),       # -> q8_0
        "a.ragged.weight": torch.randn(40, 36).to(torch.bfloat16),     # last dim 36: stays bf16
        "a.norm.weight": torch.randn(64).to(torch.bfloat16),           # 1-D: f32
        "a.f32proj.weight": torch.randn(8, 32),                        # f32 source -> q8_0
        "a.small.weight": torch.randn(3, 10),                          # f32, ragged: stays f32
        "a.head.weight": torch.randn(96, 64).to(torch.bfloat16),       # kept by pattern: bf16
        "a.conv.weight": torch.randn(4, 2, 3).to(torch.float16),       # f16 conv, ragged: stays f16
        "a.ids": torch.from_numpy(rng.integers(0, 9, 7).astype(np.int64)),
    }
    save_file(t, str(src / "model.safetensors"))
    out = qz.quantize_checkpoint(src, tmp_path / "o.gguf", keep=("*.head.*",), progress=False)
    g, ck = GGUFCheckpoint(out), Checkpoint(src)
    assert g.architecture == names.OMNI_ARCH and set(g.names) == set(t)
    expected = {"a.proj.weight": "q8_0", "a.ragged.weight": "bf16", "a.norm.weight": "f32", "a.f32proj.weight": "q8_0",
                "a.small.weight": "f32", "a.head.weight": "bf16", "a.conv.weight": "f16", "a.ids": "i64"}
    assert {n: g.dtype(n) for n in t} == expected
    for n in t:
        if expected[n] == "q8_0":
            assert g.get(n)[0].tobytes() == quantize_q8_0(ck.get_f32(n)).tobytes()
        elif n == "a.ids":
            assert np.array_equal(g.get(n)[0], t[n].numpy())
        else:
            assert np.array_equal(g.get_f32(n), ck.get_f32(n)), n
    assert g.shape("a.conv.weight") == (4, 2, 3)


def test_chunked_and_sharded(tiny_qwen3, tmp_path, monkeypatch):
    """Many small chunks per tensor and a sharded checkpoint give the same file contents."""
    from transformers import Qwen3ForCausalLM

    src, _ = tiny_qwen3
    sharded = tmp_path / "sharded"
    Qwen3ForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(sharded, max_shard_size="60KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    whole = GGUFCheckpoint(qz.quantize_checkpoint(src, tmp_path / "a.gguf", progress=False))
    monkeypatch.setattr(qz, "CHUNK_ELEMENTS", 100)  # a row or two per chunk
    chunked = GGUFCheckpoint(qz.quantize_checkpoint(sharded, tmp_path / "b.gguf", progress=False))
    assert set(chunked.names) == set(whole.names)
    for n in whole.names:
        assert chunked.get(n)[0].tobytes() == whole.get(n)[0].tobytes(), n


def test_type_none_converts_without_quantizing(tiny_qwen3, tmp_path):
    src, _ = tiny_qwen3
    g, ck = GGUFCheckpoint(qz.quantize_checkpoint(src, tmp_path / "n.gguf", qtype="none", progress=False)), Checkpoint(src)
    assert {g.dtype(n) for n in g.names} == {"bf16", "f32"} and g.field("general.file_type") is None
    for n in ck.names:
        assert np.array_equal(g.get_f32(n), ck.get_f32(n)), n
    with pytest.raises(ValueError, match="qtype must be one of"):
        qz.quantize_checkpoint(src, tmp_path / "q.gguf", qtype="q4_k")


def test_failure_leaves_no_file(tiny_qwen3, tmp_path, monkeypatch):
    src, _ = tiny_qwen3
    calls = []

    def failing(x):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return quantize_q8_0(x)

    monkeypatch.setattr(qz, "quantize_q8_0", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        qz.quantize_checkpoint(src, tmp_path / "x.gguf", progress=False)
    assert list(tmp_path.iterdir()) == []


DRIVER = """
import sys, time
import omni_lab.formats.quantize as qz
slow = qz.quantize_q8_0
def slowed(x):
    time.sleep(0.3)
    return slow(x)
qz.quantize_q8_0 = slowed
qz.quantize_checkpoint(sys.argv[1], sys.argv[2], progress=False)
"""


def test_sigkill_mid_run_leaves_no_file_under_final_name(tiny_qwen3, tmp_path):
    src, _ = tiny_qwen3
    out = tmp_path / "k.gguf"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(src), str(out)], cwd=REPO)
    partial = None
    try:
        deadline = time.time() + 60
        first = None
        while time.time() < deadline and proc.poll() is None:
            partial = next(tmp_path.glob(f".k.gguf.tmp-{proc.pid}-*"), None)
            if partial is not None:
                size = partial.stat().st_size
                first = first if first is not None else size
                if size > first:  # header and infos are down, and tensor data is being written
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "the quantizer ended before it could be killed"
        assert partial.exists() and partial.stat().st_size > first
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not out.exists()
    # the next run removes what the killed one left, and writes the file
    qz.quantize_checkpoint(src, out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.gguf"]


def test_cli_subcommand(tiny_qwen3, tmp_path, capsys):
    src, _ = tiny_qwen3
    parser = argparse.ArgumentParser(prog="omni-lab")
    qz.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "c.gguf"
    args = parser.parse_args(["quantize", str(src), str(out), "--type", "q8_0", "--keep", "lm_head.*", "--no-progress"])
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    g = GGUFCheckpoint(out)
    assert g.dtype("lm_head.weight") == "bf16" and g.dtype("model.embed_tokens.weight") == "q8_0"
    assert np.array_equal(bf16_to_f32(g.get("lm_head.weight")[0]), Checkpoint(src).get_f32("lm_head.weight"))
    assert qz.main([str(tmp_path / "nope"), str(tmp_path / "n.gguf"), "--no-progress"]) == 2
    assert "omni-lab quantize: " in (err := capsys.readouterr().err) and "nope: not a checkpoint directory" in err


# ---- what Q8_0 quantizes across Qwen3-Omni ----------------------------------------------------------------
CODE2WAV_LINEAR = re.compile(r"^code2wav\.(pre_transformer\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
                             r"|upsample\.\d+\.1\.pwconv[12])\.weight$")


@pytest.fixture(scope="module")
def tiny_omni_plan(tmp_path_factory):
    from omni_lab.models.tiny_omni import build_tiny_omni

    src = build_tiny_omni(tmp_path_factory.mktemp("tiny_omni") / "ckpt", seed=0, preset="tiny")
    return {t.name: t for t in qz.plan(Checkpoint(src))}


def test_omni_plan_quantizes_code2wav_linears_and_none_of_its_convs(tiny_omni_plan):
    plan = tiny_omni_plan
    c2w = {n: t for n, t in plan.items() if n.startswith("code2wav.")}
    quantized = {n for n, t in c2w.items() if t.target == "q8_0"}
    linears = {n for n in c2w if CODE2WAV_LINEAR.match(n)}
    # Every code2wav linear whose K is a multiple of 32, and nothing else of code2wav.
    assert quantized == {n for n in linears if c2w[n].shape[-1] % 32 == 0}
    # The tiny vocoder (hidden 32, MLP 48): q/k/v/o, gate/up and both pwconvs; down_proj's K = 48 cannot be.
    assert len(quantized) == 2 * 6 + 2 * 2 and all(c2w[n].target == "bf16" for n in linears - quantized)
    assert all(n.endswith("mlp.down_proj.weight") for n in linears - quantized)
    convs = [n for n in c2w if n.endswith(".conv.weight")]
    # 2 upsampling stages x (transposed conv, dwconv), decoder.0, 2 blocks x (transposed conv, 3 units x 2), the last
    assert len(convs) == 2 * 2 + 1 + 2 * (1 + 3 * 2) + 1 and all(c2w[n].target == "bf16" for n in convs)
    # The code embedding [768, 32] has a K that Q8_0 could take: only the table keeps it BF16.
    emb = c2w["code2wav.code_embedding.weight"]
    assert emb.shape[-1] % 32 == 0 and emb.target == "bf16"
    assert qz.kept_by(emb.name) and "embedding_mean" in qz.kept_by(emb.name)
    assert {t.target for n, t in c2w.items() if len(t.shape) == 1} == {"f32"}


def test_omni_plan_thinker_unchanged_and_the_table_is_complete(tiny_omni_plan):
    plan = tiny_omni_plan
    # Outside the table the rule is the shape rule it always was: the thinker's (and talker's) linears, experts,
    # embeddings and head are Q8_0 where K allows, as before.
    for n, t in plan.items():
        if qz.kept_by(n) is None:
            shape_rule = "f32" if len(t.shape) <= 1 else "q8_0" if t.shape[-1] % 32 == 0 else t.source
            assert t.target == shape_rule, n
    for n in ("thinker.model.embed_tokens.weight", "thinker.lm_head.weight",
              "thinker.model.layers.0.mlp.experts.3.gate_proj.weight", "thinker.model.layers.0.mlp.experts.3.down_proj.weight",
              "thinker.model.layers.1.self_attn.q_proj.weight", "thinker.audio_tower.conv_out.weight"):
        assert plan[n].target == "q8_0", n
    # Every weight of 3+ dimensions in Qwen3-Omni is a convolution the table names (this checkpoint stores its
    # experts one by one); a new one that it does not name fails here instead of being quantized by luck.
    unnamed = [n for n, t in plan.items() if len(t.shape) >= 3 and qz.kept_by(n) is None]
    assert unnamed == []
    # and every row of the table names something real
    for pattern, _ in qz.KEEP_AS_STORED:
        assert any(fnmatch.fnmatchcase(n, pattern) for n in plan), pattern


def test_a_k32_convolution_stays_16_bit_and_stacked_experts_are_quantized(tmp_path):
    """Shapes the tiny checkpoint lacks, where only the table decides: convolutions whose K is 32, in both
    layouts' key forms, beside live-layout stacked experts [E, N, K] (Q8_0, as always)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "qwen3_omni_moe"}))
    bf16 = lambda *shape: torch.randn(*shape).to(torch.bfloat16)  # noqa: E731
    t = {
        "code2wav.decoder.0.conv.weight": bf16(8, 4, 32),                      # conv [C_out, C_in, K = 32]
        "code2wav.decoder.1.block.1.conv.weight": bf16(8, 4, 32),              # transposed [C_in, C_out, K]
        "code2wav.upsample.0.1.dwconv.conv.weight": bf16(8, 1, 32),            # depthwise
        "code2wav.code_embedding.weight": bf16(64, 32),
        "thinker.audio_tower.conv2d1.weight": bf16(8, 1, 3, 32),
        "thinker.model.audio_tower.conv2d2.weight": bf16(8, 8, 3, 32),        # live layout key
        "thinker.visual.patch_embed.proj.weight": bf16(8, 3, 2, 32, 32),
        "thinker.model.language_model.layers.0.mlp.experts.gate_up_proj": bf16(4, 64, 32),
        "thinker.model.language_model.layers.0.mlp.experts.down_proj": bf16(4, 32, 32),
        "code2wav.upsample.0.1.pwconv1.weight": bf16(128, 32),
    }
    save_file(t, str(src / "model.safetensors"))
    g = GGUFCheckpoint(qz.quantize_checkpoint(src, tmp_path / "o.gguf", progress=False))
    quantized = {n for n in t if g.dtype(n) == "q8_0"}
    assert quantized == {"thinker.model.language_model.layers.0.mlp.experts.gate_up_proj",
                         "thinker.model.language_model.layers.0.mlp.experts.down_proj",
                         "code2wav.upsample.0.1.pwconv1.weight"}
    for n in set(t) - quantized:
        assert g.dtype(n) == "bf16" and np.array_equal(g.get(n)[0], t[n].view(torch.int16).numpy().view(np.uint16)), n
    assert g.shape("thinker.model.language_model.layers.0.mlp.experts.gate_up_proj") == (4, 64, 32)
    # --keep adds to the table: the stacked experts kept too
    kept = GGUFCheckpoint(qz.quantize_checkpoint(src, tmp_path / "k.gguf", keep=("*.experts.*",), progress=False))
    assert {n for n in t if kept.dtype(n) == "q8_0"} == {"code2wav.upsample.0.1.pwconv1.weight"}
    assert qz.kept_by("a.experts.x", ("*.experts.*",)) == "--keep *.experts.*"


def test_vision_linears_are_q8_0_and_its_patch_embedding_and_position_grid_stay_16_bit():
    """At the released vision shapes (hidden 1152, K a multiple of 32 everywhere): the linears quantize, the
    Conv3d patch embedding and the learned position table (gathered with bilinear weights) keep their BF16."""
    d = 1152
    for key in ("thinker.visual.blocks.0.attn.qkv.weight", "thinker.visual.blocks.26.mlp.linear_fc2.weight",
                "thinker.visual.merger_list.2.mlp.0.weight", "thinker.model.visual.merger.mlp.2.weight"):
        assert qz.target_dtype(key, (3 * d, d), "bf16") == "q8_0", key
    for key, shape in (("thinker.visual.patch_embed.proj.weight", (d, 3, 2, 16, 16)),
                       ("thinker.visual.pos_embed.weight", (2304, d)),
                       ("thinker.model.visual.pos_embed.weight", (2304, d))):
        assert qz.target_dtype(key, shape, "bf16") == "bf16", key
        assert qz.kept_by(key) is not None
