"""Concurrent compile on a real GPU: every kernel the variants launch is compiled before their first
call, so that call compiles nothing, and the results are still right (skipped without a GPU)."""
import pytest

from testenv import REPO
from pipeline import build, precompile

pytestmark = pytest.mark.gpu


def first_calls_compile_nothing_and_are_right(models, x):
    import torch
    from triton import knobs

    late = []
    knobs.runtime.jit_cache_hook = lambda **kw: late.append(kw["fn"].name) and False
    try:
        outs = [m(x) for m in models]
    finally:
        knobs.runtime.jit_cache_hook = None
    assert late == []             # nothing compiled at first call
    want = x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-5)
    for out in outs:
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_precompiled_kernels_are_not_compiled_again():
    import torch

    module = build.load_module(str(REPO / "kernels" / "rmsnorm" / "flat_1d.py"), "_precompile_t_flat_1d")
    configs = [c for c in module.CONFIGS if c["BLOCK_HW"] >= 64]
    models = [module.ModelNew(48, **c) for c in configs]
    x = torch.randn(3, 48, 33, 17, device="cuda")     # odd sizes: a specialization no other test compiled
    named = []
    stats = precompile.precompile([(str(i), (lambda m: lambda: m(x))(m)) for i, m in enumerate(models)], "cuda",
                                  before=named.append, compiling=lambda: named.append("compile"))
    assert named == [str(i) for i in range(len(models))] + ["compile"]
    assert stats["kernels"] == len(configs) and stats["threads"] >= 1
    first_calls_compile_nothing_and_are_right(models, x)


def test_kernels_compiled_ahead_are_found_compiled():
    """What a background compile (precompile.Ahead) compiled is neither captured nor compiled again."""
    import torch

    module = build.load_module(str(REPO / "kernels" / "rmsnorm" / "grid_2d.py"), "_precompile_t_grid_2d")
    models = [module.ModelNew(40, **c) for c in module.CONFIGS]
    x = torch.randn(2, 40, 31, 13, device="cuda")     # a specialization no other test compiled
    calls = [(str(i), (lambda m: lambda: m(x))(m)) for i, m in enumerate(models)]
    kernels = precompile.capture(calls, before=lambda name: None)
    assert len(kernels) == len(models)
    stats = precompile.Ahead(kernels).wait()
    assert stats["kernels"] == len(models) and stats["seconds"] > 0
    assert precompile.capture(calls, before=lambda name: None) == []    # each launch found its kernel
    first_calls_compile_nothing_and_are_right(models, x)
