"""The kernel registry's shader loading: shared WGSL pieces are included once, a missing one is named."""

import pytest

from omni_lab.gpu import KernelError
from omni_lab.gpu.runtime import SHADER_DIR, shader_source


def test_include_expands_each_library_once(tmp_path):
    src = tmp_path / "twice.wgsl"
    src.write_text('// #include "lib/exp.wgsl"\n// #include "lib/exp.wgsl"\nfn f(x: f32) -> f32 { return exp_f32(x); }\n')
    out = shader_source(src)
    assert out.count("fn exp_f32") == 1 and "already included: lib/exp.wgsl" in out
    assert (SHADER_DIR / "lib" / "exp.wgsl").read_text().strip().splitlines()[-1] in out


def test_missing_include_names_the_shader_and_the_file(tmp_path):
    src = tmp_path / "broken.wgsl"
    src.write_text('// #include "lib/nowhere.wgsl"\n')
    with pytest.raises(KernelError, match=r"broken.wgsl: includes lib/nowhere.wgsl, but .* does not exist"):
        shader_source(src)


def test_every_shader_expands_to_valid_wgsl(rt):
    """Each shader file, with its includes expanded, is accepted by wgpu (naga) as a module."""
    for path in sorted(SHADER_DIR.glob("*.wgsl")):
        rt.gpu.device.create_shader_module(label=path.name, code=shader_source(path))


def test_read_inside_an_open_step_is_an_error(rt):
    """A read inside a step would submit it half-recorded (a plan recorded from it would hold only part
    of the step): it is refused, and step.read gives the value once the step is submitted."""
    import numpy as np
    import pytest

    from omni_lab.ops import elementwise

    x = rt.upload(np.arange(8, dtype=np.float32))
    with rt.step() as step:
        y = elementwise.scale(x, 2.0)
        with pytest.raises(KernelError, match=r"read of \(8,\) f32 inside an open step \(1 dispatches recorded\)"):
            y.numpy()
        rb = step.read(y)
    assert rb.value.tolist() == [2.0 * i for i in range(8)]


def test_profile_times_steps_past_one_query_set(rt):
    """A step of more dispatches than one timestamp query set holds (a frame of speech has ~2000) is
    profiled whole: one timing a dispatch, in order, and its results are still right."""
    import numpy as np

    from omni_lab.gpu.runtime import MAX_QUERIES
    from omni_lab.ops import elementwise

    if "timestamp-query" not in rt.gpu.describe()["features"]:
        pytest.skip("no timestamp queries on this adapter")
    n = MAX_QUERIES // 2 + 37
    x = rt.upload(np.zeros(64, np.float32))
    one = rt.upload(np.ones(64, np.float32))
    with rt.profile() as prof:
        with rt.step() as step:
            for _ in range(n):
                elementwise.add(x, one, out=x)
            got = step.read(x)
    assert prof.clock == "gpu-timestamps"
    assert len(prof.timings) == n and all(t.seconds >= 0 for t in prof.timings)
    assert (got.value == n).all()
