"""Peak host memory and throughput of the streaming quantizer on a synthetic BF16 checkpoint.

Writes a safetensors checkpoint of about --size-gb (default 4.2 GB: 64 MiB BF16 matrices plus a small
norm each) tensor by tensor into a temporary directory, runs `quantize_checkpoint` on it in a subprocess
while sampling that process's resident set (psutil, every 10 ms), prints one JSON object and removes
everything it wrote. It asserts nothing: it is a benchmark.

    python bench/quantize_memory.py [--size-gb 4.2] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROWS, COLS = 4096, 8192  # 64 MiB of BF16 per matrix
REPO = Path(__file__).resolve().parents[1]


def write_checkpoint(path: Path, size_bytes: float) -> tuple[int, int]:
    """A safetensors file written tensor by tensor (never whole in memory): header, then data."""
    from omni_lab.gpu.buffers import bf16_bits

    n = max(1, round(size_bytes / (ROWS * COLS * 2)))
    specs, offset = {}, 0
    for i in range(n):
        for name, shape in ((f"layers.{i}.proj.weight", (ROWS, COLS)), (f"layers.{i}.norm.weight", (COLS,))):
            nbytes = int(np.prod(shape)) * 2
            specs[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
    header = json.dumps({"__metadata__": {"format": "pt"}, **specs}).encode()
    header += b" " * (-len(header) % 8)
    rng = np.random.default_rng(0)
    base = bf16_bits((rng.standard_normal(ROWS * COLS // 8) * 0.02).astype(np.float32))  # 8 MiB of bits
    with open(path / "model.safetensors", "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        for i in range(n):
            salt = np.uint16(i & 0x7)  # vary the low mantissa bits per tensor
            for _ in range(8):
                f.write((base ^ salt).tobytes())
            f.write(bf16_bits(np.ones(COLS, np.float32)).tobytes())
    (path / "config.json").write_text(json.dumps({"model_type": "omni_lab_synthetic", "num_matrices": n}))
    return n, offset


def run_quantizer(src: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in bytes) of quantize_checkpoint in a fresh process."""
    code = ("import sys; from omni_lab.formats.quantize import quantize_checkpoint; "
            "quantize_checkpoint(sys.argv[1], sys.argv[2], progress=False)")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(src), str(out)], cwd=REPO)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"quantizer failed with exit code {proc.returncode}")
    return seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=4.2)
    ap.add_argument("--dir", default=None, help="where to put the temporary files (default: the system temp dir)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="omni-lab-qbench-", dir=args.dir))
    try:
        src = tmp / "src"
        src.mkdir()
        n, nbytes = write_checkpoint(src, args.size_gb * 1e9)
        out = tmp / "out.gguf"
        seconds, peak = run_quantizer(src, out)
        print(json.dumps({
            "size_gb": round(nbytes / 1e9, 3),
            "seconds": round(seconds, 2),
            "gb_per_s": round(nbytes / 1e9 / seconds, 3),
            "peak_rss_mb": round(peak / 2**20, 1),
            "out_gb": round(out.stat().st_size / 1e9, 3),
            "tensors": 2 * n,
            "largest_tensor_mb": ROWS * COLS * 2 / 2**20,
            "cpu_count": psutil.cpu_count(),
        }))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
