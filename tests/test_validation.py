"""Bad checkpoints and configs end in one of our errors, naming the file and the field or tensor, before
anything is allocated from them (safetensors headers, shards, indexes, config.json)."""

import json
import math
import shutil
import struct
from pathlib import Path

import pytest

from checkpoint_edits import edited_copy
from omni_lab import cli
from omni_lab.errors import CheckpointError, ConfigError
from omni_lab.formats.safetensors_io import Checkpoint, read_safetensors_header
from omni_lab.models.config import DecoderConfig, read_config
from omni_lab.models.tiny import build_tiny_qwen3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_qwen3(tmp_path_factory.mktemp("validation") / "ckpt", seed=3)


def split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join(header, data: bytes, n: int | None = None) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(text) if n is None else n) + text + data


def copy(tiny, tmp_path) -> Path:
    return Path(shutil.copytree(tiny, tmp_path / "ckpt"))


def first_tensor(header: dict) -> str:
    return min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def test_good_header_is_read(tiny):
    st = read_safetensors_header(tiny / "model.safetensors")
    ck = Checkpoint(tiny)
    assert set(st) == set(ck.names) and all(ck.shape(n) == st[n].shape for n in st)


@pytest.mark.parametrize("case, match", [
    ("huge length", "header length"),
    ("not json", "not UTF-8 JSON"),
    ("a list", "not an object"),
    ("bad dtype", "unknown dtype"),
    ("string shape", "shape"),
    ("negative offset", "data_offsets"),
    ("past the end", "data_offsets"),
    ("2 TiB shape", "needs"),
    ("gap", "overlap or leave a gap"),
    ("truncated", "data_offsets|the file has"),
    ("padded", "the file has"),
    ("short file", "truncated"),
])
def test_bad_safetensors_header(tiny, tmp_path, case, match):
    ckpt = copy(tiny, tmp_path)
    path = ckpt / "model.safetensors"
    header, data = split(path)
    name = first_tensor(header)
    t = header[name]
    raw = {
        "huge length": lambda: join(header, data, n=1 << 40),
        "not json": lambda: join(b"{\xff not json", data),
        "a list": lambda: join([1, 2], data),
        "short file": lambda: b"\x01\x02",
        "truncated": lambda: join(header, data[:-3]),
        "padded": lambda: join(header, data + b"\0" * 8),
    }
    edits = {
        "bad dtype": lambda: t.update(dtype="Q4"),
        "string shape": lambda: t.update(shape=["4", 4]),
        "negative offset": lambda: t.update(data_offsets=[-8, t["data_offsets"][1]]),
        "past the end": lambda: t.update(data_offsets=[0, len(data) + 4096]),
        "2 TiB shape": lambda: t.update(shape=[1 << 20, 1 << 20]),
        "gap": lambda: t.update(data_offsets=[2, t["data_offsets"][1] + 2]),
    }
    if case in raw:
        path.write_bytes(raw[case]())
    else:
        edits[case]()
        path.write_bytes(join(header, data))
    with pytest.raises(CheckpointError, match=match) as e:
        Checkpoint(ckpt)
    assert str(path) in str(e.value)


def test_stray_shard_with_the_same_names_is_refused(tiny, tmp_path):
    ckpt = copy(tiny, tmp_path)
    shutil.copy(ckpt / "model.safetensors", ckpt / "model-copy.safetensors")
    with pytest.raises(CheckpointError, match="stored in both model-copy.safetensors and model.safetensors"):
        Checkpoint(ckpt)


def test_index_may_not_leave_the_checkpoint(tiny, tmp_path):
    ckpt = copy(tiny, tmp_path)
    shutil.move(ckpt / "model.safetensors", tmp_path / "outside.safetensors")
    names = list(read_safetensors_header(tmp_path / "outside.safetensors"))
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: "../outside.safetensors" for n in names}}))
    with pytest.raises(CheckpointError, match="outside"):
        Checkpoint(ckpt)


def test_index_naming_a_shard_that_lacks_the_tensor(tiny, tmp_path):
    ckpt = copy(tiny, tmp_path)
    names = list(read_safetensors_header(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {**{n: "model.safetensors" for n in names}, "lm_head.extra": "model.safetensors"}}))
    with pytest.raises(CheckpointError, match="lm_head.extra"):
        Checkpoint(ckpt)


def test_integer_weights_are_refused_where_floats_are_expected(tiny, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    ckpt = copy(tiny, tmp_path)
    tensors = load_file(ckpt / "model.safetensors")
    tensors["model.norm.weight"] = torch.ones_like(tensors["model.norm.weight"], dtype=torch.int64)
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match="'model.norm.weight' is i64, where float weights are expected"):
        Checkpoint(ckpt).get_f32("model.norm.weight")


# ---- config.json ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, match", [
    ("num_hidden_layers", 0, "must be in"),
    ("num_hidden_layers", -10 ** 12, "must be in"),
    ("num_hidden_layers", 10 ** 12, "must be in"),
    ("num_hidden_layers", "2", "must be an integer, got str"),
    ("vocab_size", 2 ** 31, "must be in"),
    ("hidden_size", True, "must be an integer, got bool"),
    ("rms_norm_eps", 0, "finite number"),
    ("rms_norm_eps", -1e-6, "finite number"),
    ("rms_norm_eps", math.nan, "finite number"),
    ("rms_norm_eps", math.inf, "finite number"),
    ("rope_theta", 0, "finite number"),
    ("layer_types", ["full_attention"], "for each of the"),
    ("num_key_value_heads", 3, "does not divide"),
    ("tie_word_embeddings", "false", "true or false"),
    ("eos_token_id", 10 ** 6, "must be in"),
    ("rope_parameters", {"rope_type": "yarn", "factor": 4}, "not supported"),
])
def test_bad_config_field(tiny, field, value, match):
    d = json.loads((tiny / "config.json").read_text())
    d.pop("rope_theta", None) if field == "rope_parameters" else None
    if field == "rope_theta":
        d["rope_parameters"] = {"rope_type": "default", "rope_theta": value}
    else:
        d[field] = value
    with pytest.raises(ConfigError, match=match) as e:
        DecoderConfig.from_dict(d, str(tiny))
    assert str(tiny / "config.json") in str(e.value) and field.split("_")[0] in str(e.value)


def test_moe_and_mrope_fields():
    base = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, rms_norm_eps=1e-6, moe_intermediate_size=16, num_experts=4,
                num_experts_per_tok=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                        "mrope_section": [4, 2, 2]})
    assert DecoderConfig.from_dict(base, moe=True, mrope=True).mrope_section == (4, 2, 2)
    for edit, match in [({"decoder_sparse_step": 0}, "decoder_sparse_step: must be in"),
                        ({"num_experts_per_tok": 5}, "num_experts_per_tok: must be in"),
                        ({"mlp_only_layers": [2]}, "mlp_only_layers"),
                        ({"rope_parameters": {"rope_theta": 1e6, "mrope_section": [4, 4]}}, "mrope_section")]:
        with pytest.raises(ConfigError, match=match):
            DecoderConfig.from_dict({**base, **edit}, moe=True, mrope=True)


@pytest.mark.parametrize("text, match", [("{not json", "not JSON"), ("[1, 2]", "not an object"),
                                         ("[" * 100000 + "]" * 100000, "not JSON"), (b"\xff\xfe", "UTF-8")])
def test_config_json_that_is_not_an_object(tmp_path, text, match):
    p = tmp_path / "config.json"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=match) as e:
        read_config(p)
    assert str(p) in str(e.value)


# ---- GGUF -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gguf(tiny, tmp_path_factory):
    from omni_lab.formats.quantize import quantize_checkpoint

    return quantize_checkpoint(tiny, tmp_path_factory.mktemp("gguf") / "tiny.gguf", progress=False)


def patched(src: Path, dst: Path, patch) -> Path:
    """A copy of `src` with patch(reader) applied through gguf's own in-place (r+) reader."""
    from gguf import GGUFReader

    shutil.copy(src, dst)
    reader = GGUFReader(dst, "r+")
    patch(reader)
    reader.data.flush()
    del reader
    return dst


def kv(reader, key):
    return reader.fields[key].parts


@pytest.mark.parametrize("case, match", [
    ("array count 2**32", "array of 4294967296 items cannot fit"),
    ("tensor offset moved", "overlap, leave a gap, or have the wrong type"),
    ("tensor type relabelled", "overlap, leave a gap, or have the wrong type|the data section holds"),
    ("tensor count one too low", "the data section holds"),
    ("invalid UTF-8 config", "not valid UTF-8"),
    ("config not JSON", "omni_lab.hf_config.*not JSON"),
])
def test_bad_gguf(tiny_gguf, tmp_path, case, match):
    from gguf import GGMLQuantizationType

    from omni_lab.formats.gguf_io import GGUFCheckpoint
    from omni_lab.errors import GGUFError

    def patch(r):
        if case == "array count 2**32":
            kv(r, "tokenizer.ggml.tokens")[4][0] = 2 ** 32
        elif case == "tensor offset moved":
            r.tensors[1].field.parts[5][0] += 32
        elif case == "tensor type relabelled":
            f32 = next(t for t in r.tensors if t.tensor_type == GGMLQuantizationType.F32)
            f32.field.parts[4][0] = int(GGMLQuantizationType.F16)
        elif case == "tensor count one too low":
            kv(r, "GGUF.tensor_count")[0][0] -= 1
        elif case == "invalid UTF-8 config":
            kv(r, "omni_lab.hf_config")[4][1] = 0xFF
        elif case == "config not JSON":
            kv(r, "omni_lab.hf_config")[4][0] = ord("[")

    bad = patched(tiny_gguf, tmp_path / "bad.gguf", patch)
    with pytest.raises(GGUFError if case != "config not JSON" else ConfigError, match=match) as e:
        GGUFCheckpoint(bad)
    assert "bad.gguf" in str(e.value)


def test_gguf_tokenizer_and_hparams_of_the_wrong_kind(tiny_gguf, tmp_path):
    from omni_lab.formats.gguf_io import GGUFCheckpoint
    from omni_lab.errors import GGUFError
    from omni_lab.models.qwen3 import Qwen3

    bad = patched(tiny_gguf, tmp_path / "tok.gguf", lambda r: kv(r, "omni_lab.tokenizer_json")[4].__setitem__(0, 32))
    with pytest.raises(GGUFError, match="omni_lab.tokenizer_json: is not a JSON object"):
        GGUFCheckpoint(bad).tokenizer_json
    # a config whose layer count is a string, as a hand-edited or foreign file may carry
    text = json.loads(GGUFCheckpoint(tiny_gguf).string_field("omni_lab.hf_config"))
    with pytest.raises(ConfigError, match=r"num_hidden_layers: must be an integer, got str"):
        Qwen3.config_from({**text, "num_hidden_layers": "2"}, str(tiny_gguf))


def test_null_means_not_set(tiny):
    d = json.loads((tiny / "config.json").read_text())
    cfg = DecoderConfig.from_dict({**d, "max_position_embeddings": None, "tie_word_embeddings": None,
                                   "head_dim": None, "sliding_window": None, "layer_types": None}, str(tiny))
    assert cfg.max_position_embeddings == 32768 and cfg.tie_word_embeddings is False
    assert cfg.head_dim == d["hidden_size"] // d["num_attention_heads"] and set(cfg.layer_types) == {"full_attention"}
    with pytest.raises(ConfigError, match="missing field num_hidden_layers"):
        DecoderConfig.from_dict({**d, "num_hidden_layers": None}, str(tiny))


# ---- NaN weights: checked at load by the GPU (ops/finite.py), and seen in the logits read ----------------
@pytest.fixture(scope="module")
def nan_norm(tiny, tmp_path_factory):
    """One NaN in the final norm's weight: that hidden column is NaN, so through the head every logit is."""
    def edit(t):
        t["model.norm.weight"][0] = float("nan")
    return edited_copy(tiny, tmp_path_factory.mktemp("nan") / "ckpt", edit_tensors=edit)


def test_nan_weights_warn_once_from_generate_and_forward(nan_norm, tiny):
    import warnings

    from omni_lab.errors import NonFiniteWarning
    from omni_lab.models.sampling import Sampler
    from omni_lab.workbench import load_ours

    model = load_ours(nan_norm, max_len=16, progress=False)
    for sampler in (None, Sampler(0.7, 5, 0.9, 0)):  # greedy reads the argmax's top logit; sampling its top-k
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            model.generate([1, 2, 3], 6, sampler, stop_at_eos=False)
        assert [w.category for w in got] == [NonFiniteWarning], got
        assert str(nan_norm) in str(got[0].message) and "omni-lab compare" in str(got[0].message)
    with pytest.warns(NonFiniteWarning, match="the logits hold NaN"):
        model.forward([1, 2, 3], start=0)
    clean = load_ours(tiny, max_len=16, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWarning)
        clean.generate([1, 2, 3], 6, stop_at_eos=False)


def test_nan_weights_warning_is_one_line_from_the_cli(nan_norm, capsys):
    assert cli.main(["generate", "--model", str(nan_norm), "--prompt-ids", "1,2,3", "--max-new-tokens", "4",
                     "--greedy"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(lines) == 2, lines  # at load, naming the weight; then what it did to the logits
    assert lines[0].startswith(f"omni-lab generate: warning: {nan_norm}: the weights 'model.norm.weight' hold NaN")
    assert lines[1].startswith(f"omni-lab generate: warning: {nan_norm}: the logits")


@pytest.mark.parametrize("name,value", [("model.layers.0.self_attn.q_proj.weight", "nan"),
                                        ("model.layers.1.self_attn.k_norm.weight", "inf")])
def test_a_non_finite_weight_is_named_at_load_even_where_the_logits_stay_finite(tiny, tmp_path, name, value):
    """A NaN or inf on the attention scores' path is absorbed by our attention (the logits stay finite, where
    Transformers' go NaN): the GPU's check of every uploaded weight names it at load, once."""
    import warnings

    from omni_lab.errors import NonFiniteWarning
    from omni_lab.workbench import load_ours

    def edit(t):
        t[name].reshape(-1)[3] = float(value)
    path = edited_copy(tiny, tmp_path / "ckpt", edit_tensors=edit)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        load_ours(path, max_len=16, progress=False)
    assert [w.category for w in got] == [NonFiniteWarning], got
    assert f"the weights '{name}' hold NaN or inf" in str(got[0].message)


def test_quantize_says_which_weights_it_copied_with_nan(nan_norm, tmp_path):
    """quantize reads every weight anyway: a NaN one is written as it is (the GGUF then warns where it loads),
    and one warning names it."""
    from omni_lab.errors import NonFiniteWarning
    from omni_lab.formats.quantize import quantize_checkpoint

    with pytest.warns(NonFiniteWarning, match=r"the weights 'model\.norm\.weight' \(copied into .*q\.gguf\) hold NaN"):
        out = quantize_checkpoint(nan_norm, tmp_path / "q.gguf", progress=False)
    assert out.is_file()
