"""The per-adapter tuning table: family from wgpu's adapter info, the default being the H200 values the
kernel tests assert, override and use round trips, ops reading the table at call time, doctor and the
generate command's --q8-path."""

from dataclasses import asdict, fields

import numpy as np
import pytest

from omni_lab.formats.q8_0 import Q8Weight

from omni_lab import cli
from omni_lab.gpu import tuning
from omni_lab.ops import attention, linear, moe, norm
from kernel_harness import check_sentinels, nmse, padded_output, rand

H200 = {"vendor": "", "architecture": "", "device": "NVIDIA H200", "description": "570.133.20", "vendor_id": 0x10DE,
        "device_id": 0x2335, "adapter_type": "DiscreteGPU", "backend_type": "Vulkan"}
GEFORCE_GL = {"vendor": "NVIDIA Corporation", "device": "NVIDIA GeForce RTX 4090/PCIe/SSE2", "vendor_id": 0,
              "adapter_type": "DiscreteGPU", "backend_type": "OpenGL"}
RADV_8060S = {"vendor": "", "architecture": "", "device": "AMD Radeon Graphics (RADV GFX1151)", "description": "Mesa 25.1",
              "vendor_id": 0x1002, "device_id": 0x1586, "adapter_type": "IntegratedGPU", "backend_type": "Vulkan"}
RADEON_BY_NAME = {"vendor": "", "device": "Radeon 8060S Graphics", "vendor_id": 0, "adapter_type": "IntegratedGPU",
                  "backend_type": "Vulkan"}
LAVAPIPE = {"vendor": "", "device": "llvmpipe (LLVM 15.0.6, 256 bits)", "description": "Mesa 22.3.6", "vendor_id": 0x10005,
            "adapter_type": "CPU", "backend_type": "Vulkan"}
LLVMPIPE_GL = {"vendor": "", "architecture": "", "device": "llvmpipe (LLVM 15.0.6, 256 bits)",
               "description": "4.5 (Core Profile) Mesa 22.3.6", "vendor_id": 65541, "device_id": 0, "adapter_type": "CPU",
               "backend_type": "OpenGL"}
CPU_NAMING_A_GPU_VENDOR = {"vendor": "AMD", "device": "software rasterizer", "vendor_id": 0x1002, "adapter_type": "CPU"}
INTEL_ARC = {"vendor": "", "device": "Intel(R) Arc(tm) A770 Graphics (DG2)", "vendor_id": 0x8086,
             "adapter_type": "DiscreteGPU", "backend_type": "Vulkan"}
APPLE = {"vendor": "apple", "architecture": "metal-3", "device": "Apple M2 Max", "vendor_id": 0, "adapter_type": "IntegratedGPU",
         "backend_type": "Metal"}


@pytest.mark.parametrize("info,family", [
    (H200, "nvidia"), (GEFORCE_GL, "nvidia"), (RADV_8060S, "amd-rdna3"), (RADEON_BY_NAME, "amd-rdna3"),
    (LAVAPIPE, "default"), (LLVMPIPE_GL, "default"), (CPU_NAMING_A_GPU_VENDOR, "default"), (INTEL_ARC, "default"),
    (APPLE, "default"), ({}, "default"),
])
def test_family_from_adapter_info(info, family):
    assert tuning.family_for(info) == family


def test_the_open_adapter_chose_its_table(rt):
    assert rt.gpu.tuning == tuning.family_for(rt.gpu.info) == tuning.adapter_family()
    assert tuning.current() is tuning.TABLES[rt.gpu.tuning]
    assert rt.gpu.describe()["tuning"] == rt.gpu.tuning


def test_default_is_the_h200_measurements_and_amd_is_marked_reasoned():
    """An unknown adapter (lavapipe: what the kernel tests run on) gets exactly the H200's values."""
    differing = lambda a, b: {f.name for f in fields(tuning.Tuning) if getattr(a, f.name) != getattr(b, f.name)}  # noqa: E731
    assert differing(tuning.DEFAULT, tuning.NVIDIA) == {"family", "basis"}
    assert "measured" in tuning.NVIDIA.basis and "not measured" in tuning.AMD_RDNA3.basis
    assert differing(tuning.AMD_RDNA3, tuning.NVIDIA) == {
        "family", "basis", "launch_threads", "moe_grouped_min_tokens", "moe_grouped_min_tokens_q8",
        "attention_split_steps", "row_wg_min", "q8_choice_shape", "conv_wide_min_tiles", "matmul_split_below"}


def test_override_and_use_round_trip():
    before = tuning.current()
    with tuning.override(launch_threads=2**10) as t:
        assert tuning.current() is t and t.launch_threads == 2**10
        assert asdict(t) == {**asdict(before), "launch_threads": 2**10}
        with tuning.use("amd-rdna3"):
            assert tuning.current() == tuning.AMD_RDNA3  # use() replaces the whole table
            with tuning.override(row_wg_min=128):
                assert tuning.current() == tuning.Tuning(**{**asdict(tuning.AMD_RDNA3), "row_wg_min": 128})
            assert tuning.current() == tuning.AMD_RDNA3
        assert tuning.current() == t
    assert tuning.current() is before
    with pytest.raises(RuntimeError, match="inside"):
        with tuning.override(moe_min_tpr=32):
            raise RuntimeError("inside")
    assert tuning.current() is before


@pytest.mark.parametrize("call,message", [
    (lambda: tuning.override(launch_thread=1), r"tuning.override: no field launch_thread \(fields: "),
    (lambda: tuning.override(family="nvidia"), r"tuning.override: no field family"),
    (lambda: tuning.override(q8_matvec_path="int4"), r"q8_matvec_path must be one of auto, dot4, f32, got 'int4'"),
    (lambda: tuning.override(q8_prefill_path="auto"), r"q8_prefill_path must be one of dot4, f32, got 'auto'"),
    (lambda: tuning.override(matvec_wg=100), r"matvec_wg must be a power of two, got 100"),
    (lambda: tuning.override(matvec_wg=8), r"matvec threads per row must not exceed matvec_wg"),
    (lambda: tuning.override(attention_split_steps=((4096, 32), (1024, 64))), r"attention_split_steps must rise"),
    (lambda: tuning.override(attention_decode_wg=2048), r"attention_decode_wg must be in 16 .. 1024"),
    (lambda: tuning.override(subgroups=1), r"subgroups must be True or False"),
    (lambda: tuning.override(attention_norm_rope=1), r"attention_norm_rope must be True or False"),
    (lambda: tuning.use("intel"), r"tuning.use: no table 'intel' \(one of nvidia, amd-rdna3, default\)"),
])
def test_bad_overrides_are_refused_and_leave_the_table(call, message):
    before = tuning.current()
    with pytest.raises(ValueError, match=message):
        with call():
            pass
    assert tuning.current() is before


def test_ops_read_the_table_at_call_time():
    assert linear.matvec_tpr(128, 2048, "bf16") == 256
    with tuning.override(launch_threads=2**12):
        assert linear.matvec_tpr(128, 2048, "bf16") == 32  # 128 rows x 32 threads reach 2^12
    with tuning.override(matvec_tpr_16bit=64, launch_threads=1):
        assert linear.matvec_tpr(151936, 2048, "bf16") == linear.default_tpr("bf16") == 64
    with tuning.override(moe_grouped_min_tokens=7, moe_grouped_min_tokens_q8=9):
        assert moe.grouped_from(None) == 7  # anything not Q8_0
        assert moe.grouped_from(Q8Weight((1, 32), None, None)) == 9
    with tuning.override(attention_split_steps=((100, 16),), attention_split_long=256):
        assert [attention.split_size(n) for n in (100, 101, 9000)] == [16, 256, 256]
    assert [attention.split_size(n) for n in (136, 2048, 2049, 8193)] == [32, 32, 64, 128]
    with tuning.use("amd-rdna3"):
        assert norm.workgroup_for(8) == 64 and norm.workgroup_for(4000) == 256
    assert norm.workgroup_for(8) == 32


@pytest.mark.parametrize("changes,tpr,wg", [({}, 256, 256), ({"launch_threads": 2**12}, 32, 256),
                                           ({"matvec_wg": 64, "launch_threads": 2**12}, 32, 64)])
def test_matvec_follows_an_override_and_still_matches_numpy(rt, rng, changes, tpr, wg):
    """The MoE router's shape (128 x 2048 bf16): its threads per row and workgroup come from the table in
    use when the op is called, and the result is numpy's either way."""
    host_w, w_seen = linear.stored(rand(rng, 128, 2048, scale=2048 ** -0.5), "bf16")
    x = rand(rng, 2048)
    w = rt.upload(host_w, "bf16")
    with tuning.override(**changes):
        out = padded_output((128,))
        with rt.profile() as prof:
            linear.matvec(rt.upload(x), w, out=out)
    assert [t.kernel for t in prof.timings] == [f"matvec.main[TPR={tpr},WG={wg},WTYPE=2]"]
    assert nmse(out.numpy(), linear.matvec_ref(x, w_seen)) < 1e-9
    check_sentinels(out)


@pytest.mark.parametrize("family", list(tuning.TABLES))
def test_every_table_computes_what_numpy_does(rt, rng, family):
    """Each family's launch shapes are valid WGSL launches that give numpy's results, checked here on
    whatever adapter runs the tests: the router matvec, norms of short and long rows (row_wg_min and
    _max), and decode attention over 450 keys of a 500-row cache, in one pass (within every table's
    attention_single_max_len) and split (64 keys a slice for amd-rdna3, 32 for the H200's steps)."""
    with tuning.use(family):
        host_w, w_seen = linear.stored(rand(rng, 128, 2048, scale=2048 ** -0.5), "bf16")
        x = rand(rng, 2048)
        assert nmse(linear.matvec(rt.upload(x), rt.upload(host_w, "bf16")).numpy(), linear.matvec_ref(x, w_seen)) < 1e-9
        for d in (8, 1000):
            h, g = rand(rng, 3, d), rand(rng, d)
            got = norm.rmsnorm(rt.upload(h), rt.upload(g), 1e-6).numpy()
            assert nmse(got, norm.rmsnorm_ref(h, g, 1e-6)) < 1e-12
        max_len, n_kv, hq, d, start = 500, 2, 8, 128, 450
        k, v = rand(rng, max_len, n_kv, d), rand(rng, max_len, n_kv, d)
        q = rand(rng, 1, hq, d)
        ck, cv = attention.kv_cache(max_len, n_kv, d)
        attention.kv_append(rt.upload(k), rt.upload(v), ck, cv, rt.upload(np.zeros(4, np.uint32)))
        step = rt.upload(np.array([start, 0, 0, 0], np.uint32))
        shader = rt.subgroup_variant("attention")
        for split, entries in ((None, ["decode"]), (True, ["split_partial", "split_combine"])):
            with rt.profile() as prof:
                got = attention.attention(rt.upload(q), ck, cv, step, d ** -0.5, split=split).numpy()
            assert [t.kernel.split("[")[0] for t in prof.timings] == [f"{shader}.{e}" for e in entries]
            assert nmse(got, attention.attention_ref(q, k, v, start, d ** -0.5)) < 1e-10


def test_doctor_names_the_table(rt, capsys):
    assert cli.main(["doctor"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("tuning"))
    assert line.split()[1] == f"{rt.gpu.tuning}:" and tuning.TABLES[rt.gpu.tuning].basis in line
    assert cli.main(["doctor", "--json"]) == 0
    assert f'"tuning": "{rt.gpu.tuning}"' in capsys.readouterr().out


def test_doctor_refuses_an_opengl_adapter(rt, monkeypatch, capsys):
    """Where only wgpu's GL backend answers (a machine without a Vulkan driver), doctor fails, so the set-up
    installs lavapipe instead of running the suite on GL."""
    from omni_lab import gpu

    info = {**rt.gpu.describe(), "backend": "OpenGL", "adapter": "llvmpipe"}
    monkeypatch.setattr(gpu, "open_gpu", lambda: type("G", (), {"describe": lambda self: info})())
    assert cli.main(["doctor", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "only adapter is OpenGL (llvmpipe)" in err and "mesa-vulkan-drivers" in err


@pytest.mark.parametrize("flag,path", [([], None), (["--q8-path", "dot4"], "dot4"), (["--q8-path", "f32"], "f32"),
                                       (["--q8-path", "auto"], "auto")])
def test_generate_runs_under_its_q8_path(monkeypatch, flag, path):
    """--q8-path holds for the whole run; without it the adapter's table decides (path None)."""
    seen = []
    monkeypatch.setattr(cli, "_generate", lambda args: seen.append(tuning.current().q8_matvec_path) or 0)
    before = tuning.current()
    assert cli.main(["generate", "--model", "m", "--prompt-ids", "1,2", *flag]) == 0
    assert seen == [path or before.q8_matvec_path] and tuning.current() is before


def test_generate_refuses_an_unknown_q8_path(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["generate", "--model", "m", "--prompt", "hi", "--q8-path", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err
