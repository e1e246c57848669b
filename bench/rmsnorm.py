"""RMSNorm side by side, one process, every shape of kernels/rmsnorm/op.yaml:
recommended variant (from the results file) vs seed baseline vs torch eager vs torch.compile vs a
device copy of the same bytes (cudaMemcpy device to device), and two Triton copies of x as controls: one in
the variants' strided tile pattern (what that access pattern allows) and one contiguous (what a Triton kernel
reaches). Prints a ratio table; `--json PATH` also stores the numbers.

    python bench/rmsnorm.py [--results profiles/<gpu>/rmsnorm/results.json] [--json out.json]

Times are CUDA-event medians with the L2 flushed before each repeat (pipeline.timing), all candidates
of a shape interleaved in rounds, so the ratios are measured side by side in one run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from pipeline import config, ops, recommend, results, timing, verify  # noqa: E402
from pipeline.build import build, load_reference  # noqa: E402
from pipeline.worker import gpu_facts  # noqa: E402


TILE_ROWS, TILE_HW = 64, 256      # the one-pass layouts' tile: 64 channel rows, H*W apart, of 256 columns
LINEAR_BLOCK = 512                 # elements per program of the contiguous copy (4 per thread at 4 warps)


@triton.jit
def _tile_copy(x_ptr, y_ptr, C, HW, n_c, n_hw, ROWS: tl.constexpr, BLOCK_HW: tl.constexpr):
    """y = x moved as the RMSNorm variants move it: [ROWS, BLOCK_HW] tiles whose rows are H*W elements apart."""
    pid = tl.program_id(0)
    b = pid // (n_c * n_hw)
    r = pid - b * n_c * n_hw
    cb = r // n_hw
    offs_c = cb * ROWS + tl.arange(0, ROWS)
    offs_hw = (r - cb * n_hw) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask = (offs_c[:, None] < C) & (offs_hw[None, :] < HW)
    offs = b.to(tl.int64) * C * HW + offs_c[:, None] * HW + offs_hw[None, :]
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask), mask=mask)


@triton.jit
def _linear_copy(x_ptr, y_ptr, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < N), mask=offs < N)


def copies(x: torch.Tensor) -> dict[str, object]:
    """Two Triton copies of x: with the variants' strided tile pattern, and contiguous (a Triton kernel's reach)."""
    y = torch.empty_like(x)
    B, C = x.shape[0], x.shape[1]
    HW = x.numel() // (B * C)
    n_c, n_hw = triton.cdiv(C, TILE_ROWS), triton.cdiv(HW, TILE_HW)
    return {"tile copy": lambda: _tile_copy[(B * n_c * n_hw,)](x, y, C, HW, n_c, n_hw, ROWS=TILE_ROWS,
                                                               BLOCK_HW=TILE_HW, num_warps=8),
            "linear copy": lambda: _linear_copy[(triton.cdiv(x.numel(), LINEAR_BLOCK),)](
                x, y, x.numel(), BLOCK=LINEAR_BLOCK, num_warps=4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", help="results.json naming the recommended variant per shape")
    ap.add_argument("--json", help="write the measured table here")
    ap.add_argument("--suite", help="op.yaml suite instead of the default shapes")
    ap.add_argument("--shape", action="append", help="only these shape ids")
    args = ap.parse_args()
    root = config.load_root(REPO / "pipeline.yaml")
    op = ops.load_op_dir(REPO / "kernels" / "rmsnorm", root)
    facts = gpu_facts("cuda")
    doc = results.load(Path(args.results)) if args.results else results.load(
        results.path_for(REPO / root.profiles_dir, facts["gpu_name"], "rmsnorm"))
    recorded = {s["id"]: s for s in doc["shapes"]}
    by_name = {v.name: (i, v) for i, v in enumerate(op.variants)}
    rows = []
    for shape in op.config.op.shape_list(args.suite):
        if args.shape and shape.id not in args.shape:
            continue
        rec = recommend.recommend(recorded[shape.id]) if shape.id in recorded else None
        if rec is None:
            print(f"{shape.id}: no recommendation recorded; run `make profile` first", file=sys.stderr)
            continue
        job = {"op": "rmsnorm", "reference": str(op.reference), "params": shape.params}
        ref_mod = load_reference(job)
        init = ref_mod.get_init_inputs()
        with torch.no_grad():
            x = verify.make_inputs(ref_mod, shape.dtype, 0, "cuda")
            eager = ref_mod.Model(*init).cuda()
            # a fresh, static compile per shape: after a first shape dynamo would otherwise recompile the same
            # code with dynamic shapes ("automatic dynamic"), a slower generic kernel than a user would get
            torch._dynamo.reset()
            compiled = torch.compile(eager, dynamic=False)
            picks = {"recommended": rec.variant["name"]}
            base = next((v.name for v in op.variants if v.baseline), None)
            if base:
                picks["baseline"] = base
            cands = {}
            for role, name in picks.items():
                i, v = by_name[name]
                model, _ = build({"index": i, "name": v.name, "file": v.file, "config": v.config}, init, "cuda",
                                 "rmsnorm")
                cands[role] = (lambda m: lambda: m(*x))(model)
            cands["torch eager"] = lambda: eager(*x)
            cands["torch.compile"] = lambda: compiled(*x)
            out = eager(*x)
            nbytes = sum(t.numel() * t.element_size() for t in x) + out.numel() * out.element_size()
            del out
            src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
            dst = torch.empty_like(src)
            cands["device copy"] = lambda: dst.copy_(src)
            cands.update(copies(x[0]))
            for fn in cands.values():   # compile (torch.compile takes a while) before sizing repeats
                fn()
            est = {k: timing.time_once(fn, "cuda") for k, fn in cands.items()}
            stats = timing.measure(cands, est, root.timing, facts["l2_bytes"], "cuda", controls=frozenset(cands))
        t = {k: s["median_ms"] for k, s in stats.items()}
        rows.append({"shape": shape.id, "bytes": nbytes, "recommended": rec.variant["name"], "median_ms": t,
                     "iqr_ms": {k: [s["p25_ms"], s["p75_ms"]] for k, s in stats.items()},
                     "fraction_of_copy": t["device copy"] / t["recommended"],
                     "vs_compile": t["torch.compile"] / t["recommended"],
                     "vs_eager": t["torch eager"] / t["recommended"],
                     "vs_baseline": t["baseline"] / t["recommended"] if "baseline" in t else None,
                     "fraction_of_tile_copy": t["tile copy"] / t["recommended"],
                     "tile_copy_of_copy": t["device copy"] / t["tile copy"],
                     "linear_copy_of_copy": t["device copy"] / t["linear copy"]})
        torch.cuda.empty_cache()
    print(f"\nRMSNorm on {facts['gpu_name']} (torch {facts['torch']}, triton {facts['triton']}); ms are medians")
    head = f"{'shape':<16}{'MB':>8}  {'recommended':<44}{'rec ms':>9}{'copy ms':>9}{'compile':>9}{'eager':>9}" \
           f"{'seed':>9}  {'of copy':>8}{'vs compile':>11}{'vs eager':>9}{'vs seed':>9}" \
           f"{'tile copy':>11}{'of tile':>8}{'linear':>8}"
    print(head)
    for r in rows:
        t = r["median_ms"]
        print(f"{r['shape']:<16}{r['bytes'] / 1e6:>8.0f}  {r['recommended']:<44}{t['recommended']:>9.3f}"
              f"{t['device copy']:>9.3f}{t['torch.compile']:>9.3f}{t['torch eager']:>9.3f}"
              f"{t.get('baseline', float('nan')):>9.3f}  {r['fraction_of_copy']:>8.3f}{r['vs_compile']:>10.2f}x"
              f"{r['vs_eager']:>8.2f}x{(r['vs_baseline'] or float('nan')):>8.2f}x"
              f"{r['tile_copy_of_copy']:>11.3f}{r['fraction_of_tile_copy']:>8.3f}{r['linear_copy_of_copy']:>8.3f}")
    print("tile copy: a Triton copy of x in the variants' [64 rows H*W apart, 256 columns] tiles, of device copy;"
          " of tile: the recommended variant against it; linear: a contiguous Triton copy, of device copy")
    if args.json:
        Path(args.json).write_text(json.dumps({"gpu": facts, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
