"""The `omni-lab` command: everything a notebook does, headless."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_doctor(args) -> int:
    from .gpu import NoAdapterError, open_gpu

    try:
        gpu = open_gpu()
    except NoAdapterError as e:
        print(f"omni-lab doctor: {e}", file=sys.stderr)
        return 2
    info = gpu.describe()
    if args.quiet:
        return 0
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"adapter       {info['adapter']} ({info['description']})")
    print(f"backend       {info['backend']}, type {info['adapter_type']}, vendor {info['vendor']}")
    print(f"features      {', '.join(info['features']) or 'none of shader-f16, subgroup, timestamp-query'}")
    for k, v in info["limits"].items():
        print(f"  {k:40s} {v:>14,}")
    if info["adapter_type"] == "CPU":
        print("note          this is a software adapter (lavapipe): correct, but slow; use a GPU for speed")
    return 0


def cmd_selfcheck(args) -> int:
    from .ops.selfcheck import run_selfcheck

    results = run_selfcheck()
    failed = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps([{"op": r.op, "nmse": r.nmse, "bound": r.bound, "ok": r.ok} for r in results], indent=2))
    else:
        for r in results:
            print(f"{'ok  ' if r.ok else 'FAIL'} {r.op:28s} nmse {r.nmse:9.2e} (bound {r.bound:.0e})  {r.seconds * 1e3:7.1f} ms")
        print(f"{len(results) - len(failed)} of {len(results)} kernels match their numpy reference")
    return 1 if failed else 0


def cmd_demo(args) -> int:
    rc = cmd_doctor(argparse.Namespace(quiet=False, json=False))
    if rc:
        return rc
    print()
    return cmd_selfcheck(argparse.Namespace(json=False))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omni-lab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("doctor", help="show the wgpu adapter, its features and limits; non-zero exit without one")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.add_argument("--quiet", action="store_true", help="print nothing; only the exit status tells")
    d.set_defaults(func=cmd_doctor)

    s = sub.add_parser("selfcheck", help="run each kernel once against its numpy reference")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_selfcheck)

    m = sub.add_parser("demo", help="the main job: check the adapter and kernels, then run the tiny models")
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
