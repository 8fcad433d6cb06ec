"""GGUF in and out: the name table against llama.cpp's own, round trips through gguf-py's reader, and clear
errors for truncated files, unknown tensor types, wrong architectures and missing tensors."""

import json

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, MODEL_ARCH

from omni_lab.formats import names
from omni_lab.formats.gguf_io import GGUFCheckpoint, GGUFError, open_checkpoint, write_gguf
from omni_lab.formats.q8_0 import quantize_q8_0
from omni_lab.gpu.buffers import bf16_bits, bf16_to_f32

QWEN3_HF = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"] + [
    f"model.layers.{i}.{part}.weight" for i in (0, 27) for part in (
        "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "self_attn.q_norm", "self_attn.k_norm", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
        "mlp.down_proj")]

TINY_CONFIG = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
               "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
               "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "vocab_size": 40,
               "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}, "tie_word_embeddings": True}


# ---- the name table ------------------------------------------------------------------------------------
def test_names_agree_with_llama_cpp_tables():
    names.check_against_gguf()
    llama = gguf.get_tensor_name_map(MODEL_ARCH.QWEN3, 28)  # llama.cpp's own HF -> GGUF mapping
    for hf in QWEN3_HF:
        g = names.hf_to_gguf(hf, names.QWEN3_ARCH)
        assert g == llama.get_name(hf, try_suffixes=(".weight", ".bias")), hf
        assert names.gguf_to_hf(g, names.QWEN3_ARCH) == hf
    assert names.hf_to_gguf("model.layers.3.self_attn.q_proj.bias", "qwen3") == "blk.3.attn_q.bias"
    assert names.hf_to_gguf("model.embed_tokens.weight", "qwen3") == "token_embd.weight"
    assert names.hf_to_gguf("lm_head.weight", "qwen3") == "output.weight"


def test_names_unknown_and_other_architectures():
    with pytest.raises(names.UnknownTensorName, match=r"qwen3: no GGUF name for tensor 'model.rotary_emb.inv_freq'"):
        names.hf_to_gguf("model.rotary_emb.inv_freq", names.QWEN3_ARCH)
    omni = "thinker.model.layers.3.mlp.experts.7.gate_proj.weight"
    assert names.arch_for("qwen3_omni_moe") == names.OMNI_ARCH
    assert names.hf_to_gguf(omni, names.OMNI_ARCH) == omni == names.gguf_to_hf(omni, names.OMNI_ARCH)


# ---- round trips -----------------------------------------------------------------------------------------
def small_tensors(rng):
    w = rng.standard_normal((96, 64)).astype(np.float32)
    return {
        "model.embed_tokens.weight": (quantize_q8_0(rng.standard_normal((40, 64)).astype(np.float32)), "q8_0"),
        "model.layers.0.mlp.gate_proj.weight": (quantize_q8_0(w), "q8_0"),
        "model.layers.0.mlp.up_proj.weight": (bf16_bits(w), "bf16"),
        "model.layers.0.mlp.down_proj.weight": (rng.standard_normal((64, 96)).astype(np.float16), "f16"),
        "model.layers.0.input_layernorm.weight": (rng.standard_normal(64).astype(np.float32), "f32"),
        "model.norm.weight": (rng.standard_normal(64).astype(np.float32), "f32"),
    }


def test_round_trip_equals_gguf_own_reading(tmp_path, rng):
    tensors = small_tensors(rng)
    path = write_gguf(tmp_path / "m.gguf", TINY_CONFIG, tensors)
    ck = GGUFCheckpoint(path, architecture="qwen3")
    assert ck.config == TINY_CONFIG and ck.architecture == "qwen3" and ck.names == list(tensors)
    assert ck.files() == [path]
    raw = {t.name: t for t in GGUFReader(path).tensors}
    assert set(raw) == {names.hf_to_gguf(n, "qwen3") for n in tensors}
    for name, (array, dtype) in tensors.items():
        got, got_dtype = ck.get(name)
        assert got_dtype == dtype
        assert got.tobytes() == np.ascontiguousarray(array).tobytes(), name
        t = raw[ck.gguf_name(name)]
        if dtype == "q8_0":
            # get_f32 == gguf's own dequantization of what is in the file
            assert np.array_equal(ck.get_f32(name), gguf.quants.dequantize(t.data, GGMLQuantizationType.Q8_0))
            assert ck.shape(name) == (got.shape[0], got.shape[1] // 34 * 32)
        elif dtype == "bf16":
            assert np.array_equal(ck.get_f32(name), bf16_to_f32(array)) and ck.shape(name) == array.shape
        else:
            assert np.array_equal(ck.get_f32(name), array.astype(np.float32)) and ck.shape(name) == array.shape
    assert ck.field("qwen3.embedding_length") == 64 and ck.field("qwen3.rope.freq_base") == 1e6
    assert ck.field("qwen3.attention.key_length") == 32
    ck.expect("model.norm.weight", (64,))
    with pytest.raises(GGUFError, match=r"m.gguf: tensor 'model.norm.weight' has shape \[64\], expected \[32\]"):
        ck.expect("model.norm.weight", (32,))
    assert isinstance(open_checkpoint(path), GGUFCheckpoint)


def test_other_architecture_keeps_hf_names(tmp_path, rng):
    config = {"model_type": "qwen3_omni_moe", "thinker_config": {"text_config": {"hidden_size": 64}}}
    name = "thinker.model.layers.0.mlp.experts.3.up_proj.weight"
    path = write_gguf(tmp_path / "o.gguf", config, {name: (quantize_q8_0(rng.standard_normal((8, 64))), "q8_0")})
    ck = GGUFCheckpoint(path)
    assert ck.architecture == names.OMNI_ARCH and ck.names == [name] and ck.gguf_name(name) == name
    assert ck.config == config and ck.shape(name) == (8, 64)


def test_llama_cpp_written_qwen3_gets_a_config(tmp_path, rng):
    """A qwen3 GGUF without our config key (as llama.cpp writes one): config from the hparam keys."""
    path = tmp_path / "l.gguf"
    w = GGUFWriter(path, "qwen3")
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_feed_forward_length(96)
    w.add_context_length(128)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6)
    w.add_tensor("token_embd.weight", rng.standard_normal((40, 64)).astype(np.float32))
    w.add_tensor("rope_freqs.weight", np.ones(16, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ck = GGUFCheckpoint(path)
    assert ck.config["hidden_size"] == 64 and ck.config["head_dim"] == 32 and ck.config["tie_word_embeddings"]
    assert ck.config["rope_parameters"]["rope_theta"] == 1e6
    assert ck.names == ["model.embed_tokens.weight", "rope_freqs.weight"]  # no HF row: GGUF name kept


# ---- errors ----------------------------------------------------------------------------------------------
@pytest.fixture
def small_file(tmp_path, rng):
    return write_gguf(tmp_path / "s.gguf", TINY_CONFIG, small_tensors(rng))


@pytest.mark.parametrize("keep", [0, 6, 30, 200, -100, -1])
def test_truncated_file_is_named(tmp_path, small_file, keep):
    data = small_file.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    with pytest.raises(GGUFError, match=r"cut.gguf: ([^:]+: )?truncated"):
        GGUFCheckpoint(cut)


def test_unknown_tensor_type_is_named(small_file):
    reader = GGUFReader(small_file, "r+")  # gguf-py's own in-place editing: patch one tensor's type id
    reader.tensors[1].field.parts[4][0] = 99
    reader.data.flush()
    del reader
    with pytest.raises(GGUFError, match=r"s.gguf: tensor '[^']+': unknown tensor type 99 \(not a GGML type that gguf [0-9.]+ knows\)"):
        GGUFCheckpoint(small_file)


def test_unsupported_known_type_is_named(tmp_path, rng):
    path = tmp_path / "q4.gguf"
    w = GGUFWriter(path, "qwen3")
    w.add_string("omni_lab.hf_config", json.dumps(TINY_CONFIG))
    q4 = gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), GGMLQuantizationType.Q4_0)
    w.add_tensor("blk.0.ffn_up.weight", q4, raw_dtype=GGMLQuantizationType.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ck = GGUFCheckpoint(path)
    with pytest.raises(GGUFError, match=r"q4.gguf: tensor 'model.layers.0.mlp.up_proj.weight' is Q4_0, which omni_lab does not read"):
        ck.get("model.layers.0.mlp.up_proj.weight")


def test_wrong_architecture_and_missing_tensor(small_file, tmp_path):
    with pytest.raises(GGUFError, match=r"s.gguf: architecture is 'qwen3', expected 'qwen3omni-omnilab'"):
        GGUFCheckpoint(small_file, architecture=names.OMNI_ARCH)
    ck = GGUFCheckpoint(small_file)
    with pytest.raises(GGUFError, match=r"s.gguf: tensor 'lm_head.weight' is missing"):
        ck.get("lm_head.weight")
    with pytest.raises(GGUFError, match=r"nothing.gguf: no such GGUF file"):
        GGUFCheckpoint(tmp_path / "nothing.gguf")
