"""Q8_0: host quantization byte-identical to gguf-py, the GPU's activation quantization against llama.cpp's
rule, the path chooser, and argument errors. The dot4 and f32 matvecs and the tiled matmul against their
numpy references over sweeps with ragged N and split bindings are registry cases (ops/q8_0.py cases)."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from omni_lab.formats.q8_0 import (BLOCK_BYTES, QK, Q8Weight, dequantize_q8_0, join_q8_0, quantize_q8_0, split_q8_0,
                                   upload_f32_as_q8_0, upload_q8_0)
from omni_lab.gpu import KernelError, tuning
from omni_lab.ops import q8_0 as q8
from omni_lab.ops.q8_0 import NMSE_Q8_EXACT, random_q8_weights
from kernel_harness import check_sentinels, nmse, padded_output, rand

Q8 = GGMLQuantizationType.Q8_0


# ---- host: bytes identical to gguf-py ------------------------------------------------------------------
def edge_rows(rng, k):
    rows = [
        np.zeros(k),                                          # d = 0: all-zero block, scale 0
        rng.standard_normal(k) * 1e30,                        # huge: the f16 scale overflows to inf
        rng.standard_normal(k) * 1e-30,                       # tiny: the f16 scale underflows to 0
        np.where(np.arange(k) % QK == 5, -1000.0, 1e-3),      # one outlier per block, negative max
        (np.arange(k) % QK - 15.5) * (127 / 16) / 127 * 2,    # values on exact rounding halves
        np.full(k, 65504.0 * 127),                            # scale at the f16 maximum
    ]
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 32), (7, 96), (33, 4096), (2, 3, 64)])
def test_quantize_byte_identical_to_gguf(rng, shape):
    x = rand(rng, *shape)
    assert quantize_q8_0(x).tobytes() == quantize(x, Q8).tobytes()
    assert quantize_q8_0(x).shape == (*shape[:-1], shape[-1] // QK * BLOCK_BYTES)


def test_quantize_edge_cases_byte_identical(rng):
    x = edge_rows(rng, 128)
    with np.errstate(over="ignore", invalid="ignore"):
        ours, theirs = quantize_q8_0(x), quantize(x, Q8)
    assert ours.tobytes() == theirs.tobytes()
    assert (ours[0] == 0).all()  # zeros -> zero scale and zero quants


def test_quantize_rows_in_chunks_equals_whole(rng):
    """The quantizer works in row chunks; blocks never straddle rows, so the bytes must not change."""
    x = rand(rng, 37, 256)
    whole = quantize_q8_0(x)
    assert np.concatenate([quantize_q8_0(x[i:i + 5]) for i in range(0, 37, 5)]).tobytes() == whole.tobytes()


def test_block_layout_independent_check():
    """Pin the format independently of gguf-py: f16 d = max|x|/127, then 32 int8 roundf(x/d)."""
    x = (np.arange(32, dtype=np.float32) - 12.0) * 0.25  # max |x| = 4.75
    b = quantize_q8_0(x[None])[0]
    d = np.float32(4.75) / np.float32(127)
    assert b[:2].view(np.float16)[0] == np.float16(d)
    expected = np.sign(x) * np.floor(np.abs(x) / d + 0.5)  # exact here: no value sits near a half
    assert (b[2:].view(np.int8) == expected).all()


def test_dequantize_and_split_join(rng):
    x = rand(rng, 9, 160)
    blocks = quantize_q8_0(x)
    assert np.array_equal(dequantize_q8_0(blocks), dequantize(blocks, Q8))
    q, d = split_q8_0(blocks, x.shape)
    assert q.shape == (9, 160) and q.dtype == np.int8 and d.shape == (9, 5) and d.dtype == np.float16
    assert np.array_equal(join_q8_0(q, d), blocks)
    assert np.allclose(dequantize_q8_0(blocks), x, atol=np.abs(x).max() / 127)


def test_host_rejects_ragged_k():
    with pytest.raises(ValueError, match=r"quantize_q8_0: .*multiple of 32.*\(3, 40\)"):
        quantize_q8_0(np.zeros((3, 40), np.float32))
    with pytest.raises(ValueError, match=r"upload_q8_0.*multiple of 32"):
        upload_q8_0(np.zeros((3, 34), np.uint8), (3, 40))


# ---- GPU -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t,k", [(1, 32), (3, 96), (5, 1056), (2, 4096)])
def test_quantize_activations(rt, rng, t, k):
    x = rand(rng, t, k, scale=3.0)
    x[0, :QK] = 0.0            # an all-zero block
    x[-1, -QK:] *= 1e20        # a huge block
    q_out, d_out = padded_output((t, k // 4), "u32"), padded_output((t, k // QK))
    q8.quantize_activations(rt.upload(x), out=(q_out, d_out))
    q_ref, d_ref = q8.quantize_activations_ref(x)
    q_gpu = q_out.numpy().view(np.int8).reshape(t, k)
    d_gpu = d_out.numpy()
    np.testing.assert_allclose(d_gpu, d_ref, rtol=1e-6, atol=0)
    diff = np.abs(q_gpu.astype(np.int32) - q_ref)
    assert diff.max() <= 1 and (diff != 0).mean() < 1e-3, f"{int((diff != 0).sum())} quants differ"
    assert (q_gpu[0, :QK] == 0).all() and d_gpu[0, 0] == 0
    check_sentinels(q_out)
    check_sentinels(d_out)


def test_q8_linear_chooses_once_and_obeys_overrides(rt, rng, monkeypatch):
    w, wq, wd = random_q8_weights(rng, 40, 256)
    x = rand(rng, 1, 256)
    choice = q8.choose_path()
    assert choice["path"] in q8.PATHS and set(choice["seconds"]) == set(q8.PATHS)
    calls = []
    monkeypatch.setattr(q8, "_time_dispatches", lambda *a, **k: calls.append(a) or 0.0)
    y = q8.q8_linear(rt.upload(x), w).numpy()  # cached: no second measurement
    assert calls == [] and q8.choose_path() is choice
    ref = q8.q8_matvec_ref(x, wq, wd) if choice["path"] == "dot4" else q8.q8_matvec_f32_ref(x, wq, wd)
    assert nmse(y, ref) < NMSE_Q8_EXACT
    assert nmse(q8.q8_linear(rt.upload(x), w, path="dot4").numpy(), q8.q8_matvec_ref(x, wq, wd)) < NMSE_Q8_EXACT
    assert nmse(q8.q8_linear(rt.upload(x), w, path="f32").numpy(), q8.q8_matvec_f32_ref(x, wq, wd)) < NMSE_Q8_EXACT
    xm = rand(rng, 3, 256)
    for path in q8.PATHS:  # several tokens: the prefill matmul on the table's q8_prefill_path
        with tuning.override(q8_prefill_path=path):
            assert nmse(q8.q8_linear(rt.upload(xm), w).numpy(), q8.q8_matmul_ref(xm, wq, wd, path)) < NMSE_Q8_EXACT
    with pytest.raises(KernelError, match="q8_linear: path must be"):
        q8.q8_linear(rt.upload(x), w, path="int4")


def test_choose_path_keeps_dot4_unless_f32_is_clearly_faster(rt, monkeypatch):
    for f32_time, expected in ((0.9, "dot4"), (0.6, "dot4"), (0.4, "f32")):
        times = iter([1.0, f32_time])  # choose_path times dot4, then f32
        monkeypatch.setattr(q8, "_time_dispatches", lambda *a, **k: next(times))
        monkeypatch.setattr(q8, "_CHOICE", {})
        assert q8.choose_path()["path"] == expected


def q8_kernels(prof) -> list[str]:
    return [t.kernel.split("[")[0] for t in prof.timings]


@pytest.mark.parametrize("path", ["dot4", "f32"])
def test_q8_path_setting_skips_the_measurement(rt, rng, monkeypatch, capsys, path):
    """tuning's q8_matvec_path names the decode path: no timing runs, nothing is said, and 'auto' calls
    (the models' default) take the named path."""
    w, wq, wd = random_q8_weights(rng, 40, 256)
    x = rand(rng, 1, 256)
    calls = []
    monkeypatch.setattr(q8, "_time_dispatches", lambda *a, **k: calls.append(a) or 1.0)
    monkeypatch.setattr(q8, "_CHOICE", {})
    ref = q8.q8_matvec_ref if path == "dot4" else q8.q8_matvec_f32_ref
    with tuning.override(q8_matvec_path=path), rt.profile() as prof:
        y = q8.q8_linear(rt.upload(x), w)
        ys = q8.q8_linears(rt.upload(x), (w, w), (rt.empty((1, 40)), rt.empty((1, 40))))
    assert calls == [] and q8._CHOICE == {}
    assert "Q8_0 decode matvec" not in capsys.readouterr().err
    # dot4 as this adapter's table runs it: x quantized in the matvecs' workgroups, or by its own pass (one
    # shared by the two projections of q8_linears)
    dot4 = (["q8_0.matvec_dot4_x", "q8_0.multi_dot4"] if q8.fuses_quantization(256) else
            ["q8_0.quantize_act", "q8_0.matvec_dot4", "q8_0.quantize_act", "q8_0.multi_dot4_q"])
    expected = dot4 if path == "dot4" else ["q8_0.matvec_f32", "q8_0.multi_f32"]
    assert q8_kernels(prof) == expected
    for out in (y, *ys):
        assert nmse(out.numpy(), ref(x, wq, wd)) < NMSE_Q8_EXACT


def test_auto_measures_once_per_adapter_and_says_so(rt, rng, monkeypatch, capsys):
    """'auto' in the table times both paths once (dot4, then f32) and prints one line naming the adapter,
    both times and the choice; later calls reuse it silently."""
    w, wq, wd = random_q8_weights(rng, 40, 256)
    x = rand(rng, 1, 256)
    times = iter([1e-3, 4e-4])  # f32 under half of dot4's time: f32
    calls = []
    monkeypatch.setattr(q8, "_time_dispatches", lambda *a, **k: calls.append(a) or next(times))
    monkeypatch.setattr(q8, "_CHOICE", {})
    with tuning.override(q8_matvec_path="auto"):
        ys = [q8.q8_linear(rt.upload(x), w).numpy() for _ in range(3)]
        q8.q8_linears(rt.upload(x), (w, w), (rt.empty((1, 40)), rt.empty((1, 40))))
    assert len(calls) == 2
    said = [ln for ln in capsys.readouterr().err.splitlines() if "Q8_0 decode matvec" in ln]
    assert len(said) == 1, said
    n, k = tuning.current().q8_choice_shape
    assert said[0] == (f"omni_lab: Q8_0 decode matvec on {rt.gpu.info['device']} ({rt.gpu.info['backend_type']}): "
                       f"dot4 1.000 ms, f32 0.400 ms for {n} x {k} (wall clock) -> f32; set tuning q8_matvec_path "
                       "(omni-lab generate --q8-path) to skip this measurement")
    for y in ys:
        assert nmse(y, q8.q8_matvec_f32_ref(x, wq, wd)) < NMSE_Q8_EXACT


def test_q8_linears_take_one_dispatch_at_decode(rt, rng):
    """q/k/v-style projections of one x: at one token one multi dispatch on either path (x quantized in its
    workgroups on dot4, where the table turns that on), each result the single-weight reference; several
    tokens take the matmul per weight."""
    ws = [random_q8_weights(rng, n, 256) for n in (40, 8, 8)]
    x = rand(rng, 1, 256)
    for path, entry, ref in (("dot4", "q8_0.multi_dot4", q8.q8_matvec_ref), ("f32", "q8_0.multi_f32", q8.q8_matvec_f32_ref)):
        outs = tuple(rt.empty((1, w.shape[0]), "f32") for w, _, _ in ws)
        with q8.staging(), rt.profile() as prof:
            ys = q8.q8_linears(rt.upload(x), tuple(w for w, _, _ in ws), outs, path=path)
        assert q8_kernels(prof) == [entry]
        for y, (_, wq, wd) in zip(ys, ws):
            assert nmse(y.numpy(), ref(x, wq, wd)) < NMSE_Q8_EXACT
    xm = rand(rng, 3, 256)
    ys = q8.q8_linears(rt.upload(xm), tuple(w for w, _, _ in ws), tuple(rt.empty((3, w.shape[0]), "f32") for w, _, _ in ws))
    for y, (_, wq, wd) in zip(ys, ws):
        assert nmse(y.numpy(), q8.q8_matmul_ref(xm, wq, wd, q8.q8_prefill_path())) < NMSE_Q8_EXACT


def test_q8_linears_past_the_fused_k_share_one_quantization(rt, rng):
    """Where K is past fuses_quantization, one quantize_act feeds every projection, in one multi dispatch."""
    ws = [random_q8_weights(rng, n, 256) for n in (40, 8)]
    x = rand(rng, 1, 256)
    outs = tuple(rt.empty((1, w.shape[0]), "f32") for w, _, _ in ws)
    with tuning.override(q8_fuse_max_k=0), rt.profile() as prof:
        ys = q8.q8_linears(rt.upload(x), tuple(w for w, _, _ in ws), outs, path="dot4")
    assert q8_kernels(prof) == ["q8_0.quantize_act", "q8_0.multi_dot4_q"]
    for y, (_, wq, wd) in zip(ys, ws):
        assert nmse(y.numpy(), q8.q8_matvec_ref(x, wq, wd)) < NMSE_Q8_EXACT


@pytest.mark.parametrize("k", [96, 2048, 6144])
def test_quantizing_in_workgroups_equals_the_separate_pass(rt, rng, k):
    """matvec_dot4_x, multi_dot4 and swiglu_dot4 quantize with quantize_act's code: their results are those
    of the separate pass (and of swiglu then q8_matvec) bit for bit, x with rounding halves and an
    all-zero block included."""
    from omni_lab.ops import elementwise

    w, _, _ = random_q8_weights(rng, 70, k)
    x = rand(rng, 1, k, scale=3.0)
    x[0, :QK] = 0.0
    x[0, QK:2 * QK] = (np.arange(QK) - 15.5) * 2  # d = 31/127: x / d lands on halves
    up = rand(rng, 1, k)
    with tuning.override(q8_fuse_max_k=0):
        separate = q8.q8_matvec(rt.upload(x), w).numpy()
        act = elementwise.swiglu(rt.upload(x), rt.upload(up))
        separate_swiglu = q8.q8_matvec(act, w).numpy()
    # The separate pass's launch shape (64 threads a row, not widened), so that the f32 sums run in the same
    # order and only the quantization could differ.
    table = tuning.current()
    same_shape = dict(q8_fused_min_tpr=table.q8_matvec_wg // table.q8_matvec_rows, launch_threads=1)
    with q8.staging(), tuning.override(**same_shape), rt.profile() as prof:
        fused = q8.q8_matvec(rt.upload(x), w).numpy()
        multi = q8.q8_matvec_multi(rt.upload(x), (w, w), (rt.empty((1, 70)), rt.empty((1, 70))), path="dot4")
        fused_swiglu = q8.q8_matvec_swiglu(rt.upload(x), rt.upload(up), w, path="dot4").numpy()
    assert [kn.split("[")[0] for kn in (t.kernel for t in prof.timings)] == [
        "q8_0.matvec_dot4_x", "q8_0.multi_dot4", "q8_0.swiglu_dot4"]
    np.testing.assert_array_equal(fused, separate)
    for y in multi:
        np.testing.assert_array_equal(y.numpy(), separate)
    np.testing.assert_array_equal(fused_swiglu, separate_swiglu)


def test_swiglu_and_multi_errors_name_the_kernel(rt, rng):
    w, _, _ = random_q8_weights(rng, 8, 64)
    with pytest.raises(KernelError, match=r"q8_matvec_swiglu: gate and up must be \[F\] or \[1, F\]"):
        q8.q8_matvec_swiglu(rt.upload(np.zeros(64, np.float32)), rt.upload(np.zeros(32, np.float32)), w)
    other, _, _ = random_q8_weights(rng, 8, 96)
    with pytest.raises(KernelError, match=r"q8_matvec_multi: weights must be 2 or 3 Q8Weights of x's K"):
        q8.q8_matvec_multi(rt.upload(np.zeros(64, np.float32)), (w, other), (rt.empty((8,)), rt.empty((8,))), path="f32")


def test_errors_name_kernel_and_shape(rt, rng):
    with pytest.raises(KernelError, match=r"q8_quantize_activations: K must be a multiple of 32.*x=\(2, 40\) f32"):
        q8.quantize_activations(rt.upload(np.zeros((2, 40), np.float32)))
    ragged = Q8Weight((4, 40), rt.upload(np.zeros((4, 10), np.uint32)), rt.upload(np.zeros((4, 1), np.float16)))
    for op, name in [(q8.q8_matvec, "q8_matvec"), (q8.q8_matvec_f32, "q8_matvec_f32")]:
        with pytest.raises(KernelError, match=rf"{name}: K must be a multiple of 32, got w shape \(4, 40\)"):
            op(rt.upload(np.zeros(40, np.float32)), ragged)
    with pytest.raises(KernelError, match=r"q8_matmul: K must be a multiple of 32"):
        q8.q8_matmul(rt.upload(np.zeros((2, 40), np.float32)), ragged)
    w = upload_f32_as_q8_0(rand(rng, 4, 64))
    with pytest.raises(KernelError, match=r"q8_matvec: x must be \[K\] or \[1, K\] with K = 64.*x=\(32,\) f32"):
        q8.q8_matvec(rt.upload(np.zeros(32, np.float32)), w)
    with pytest.raises(KernelError, match=r"q8_matvec_f32: x must be f32, got i32"):
        q8.q8_matvec_f32(rt.upload(np.zeros(64, np.int32)), w)
    with pytest.raises(KernelError, match=r"q8_matmul: x must be \[M, K\] with K = 64"):
        q8.q8_matmul(rt.upload(np.zeros((3, 32), np.float32)), w)
    with pytest.raises(KernelError, match=r"q8_matvec: w must be a Q8Weight"):
        q8.q8_matvec(rt.upload(np.zeros(64, np.float32)), rt.upload(np.zeros((4, 64), np.float32)))
