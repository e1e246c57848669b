"""Helpers the kernel correctness tests share: load an op's reference and variants by path (no
pipeline import), read op.yaml's tolerances, build inputs, compare a variant with the reference
run in fp32.

Imported as a sibling (`from opkit import ...`): pytest's default 'prepend' import mode puts this
folder on sys.path because it has no __init__.py. It is not `kernels.opkit` since `kernels` is the
repository's kernel folder. Per-op shapes, dtypes, special cases and interpreter workarounds stay
in the test files.
"""
import ast
import importlib.util
import inspect
import os
import shutil
from pathlib import Path

# Before torch/triton are imported. conftest.py does the same; repeated so that a test module
# importing this first is right on its own.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
import yaml

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = "cuda" if (not INTERPRET and torch.cuda.is_available()) else "cpu"
ROOT = Path(__file__).resolve().parents[2]
# (rtol, atol) per dtype where op.yaml names none; the output is compared in fp32.
DEFAULT_TOL = {"float32": (1e-4, 1e-5), "float16": (1e-2, 1e-3), "bfloat16": (2e-2, 1e-2)}


def case_id(x):
    """A pytest id part: a config or size dict, a shape tuple, or a dtype."""
    if isinstance(x, dict):
        return "-".join(f"{k}{v}" for k, v in x.items()) or "default"
    if isinstance(x, tuple):
        return "x".join(map(str, x))
    return str(x).replace("torch.", "")


def uniform(shape, dtype, seed, low=-2.0, high=2.0):
    """Uniform in [low, high) from a private generator (the global RNG is left alone), cast, on DEVICE."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * (high - low) + low
    return x.to(dtype).to(DEVICE)


class OpKit:
    """One op's folder kernels/<op>/: its reference, variants and op.yaml."""

    def __init__(self, op):
        self.op = op
        self.kdir = ROOT / "kernels" / op
        self.op_yaml = yaml.safe_load((self.kdir / "op.yaml").read_text())
        self.variants = sorted(p.stem for p in self.kdir.glob("*.py")
                               if p.stem != "reference" and not p.stem.startswith("_"))
        # One private copy of each module per kit, so a test may patch its copy's globals.
        self._modules = {}

    def load(self, stem):
        if stem not in self._modules:
            spec = importlib.util.spec_from_file_location(f"_test_{self.op}_{stem}", self.kdir / f"{stem}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._modules[stem] = module
        return self._modules[stem]

    @property
    def ref(self):
        return self.load("reference")

    def tol(self, dtype):
        name = str(dtype).replace("torch.", "")
        t = ((self.op_yaml.get("verify") or {}).get("tolerance") or {}).get(name)
        return (float(t["rtol"]), float(t["atol"])) if t else DEFAULT_TOL[name]

    def inputs(self, sizes, dtype, seed):
        """The reference's get_inputs() at overridden module-level sizes, cast like the pipeline does."""
        ref = self.ref
        for k, v in sizes.items():
            setattr(ref, k, v)
        torch.manual_seed(seed)
        return [t.to(dtype).to(DEVICE) if t.is_floating_point() else t.to(DEVICE) for t in ref.get_inputs()]

    def check(self, model, inputs, poison=False):
        """Assert model(*inputs) matches the fp32 reference in shape, dtype, device and values.
        poison: allocate and free a NaN tensor like inputs[0] just before the call, so output
        elements the kernel never writes are likely to show as NaN."""
        ref_model = self.ref.Model(*self.ref.get_init_inputs())
        expected = ref_model(*[t.float() for t in inputs])
        out_dtype = ref_model(*inputs).dtype
        if poison:
            torch.full_like(inputs[0], float("nan"))
        out = model(*inputs)
        assert out.shape == expected.shape and out.dtype == out_dtype and out.device == inputs[0].device
        o = out.float()
        assert torch.isfinite(o).all(), "non-finite output (unwritten or NaN)"
        rtol, atol = self.tol(inputs[0].dtype)
        torch.testing.assert_close(o, expected, rtol=rtol, atol=atol)
        return out

    def run(self, model, inputs):
        """check(), skipping a variant that refuses the inputs."""
        try:
            self.check(model, inputs)
        except NotImplementedError as e:
            pytest.skip(f"unsupported: {e}")

    def config_cases(self, shapes, dtypes, stems=None):
        """(stem, cfg, shape, dtype) params: every variant x its every CONFIGS entry x shape x dtype."""
        return [pytest.param(stem, cfg, shape, dtype,
                             id=f"{stem}-{case_id(cfg)}-{case_id(shape)}-{case_id(dtype)}")
                for stem in (self.variants if stems is None else stems)
                for cfg in self.load(stem).CONFIGS for shape in shapes for dtype in dtypes]

    def check_contract(self, stem, min_configs=2):
        """What every variant file of an op must provide: LAYOUT; min_configs to 6 distinct, non-empty
        CONFIGS whose keys are constructor keywords with defaults; no autotune and no inputs of
        its own; @triton.jit kernels named _<op>_..._kernel; torch and triton imported."""
        module = self.load(stem)
        assert isinstance(module.LAYOUT, str) and module.LAYOUT.strip()
        configs = module.CONFIGS
        assert isinstance(configs, list) and min_configs <= len(configs) <= 6
        assert all(isinstance(c, dict) and c for c in configs)
        assert len({tuple(sorted(c.items())) for c in configs}) == len(configs), "duplicate configs"
        params = inspect.signature(module.ModelNew.__init__).parameters
        defaults = {n for n, p in params.items() if p.default is not inspect.Parameter.empty}
        init_inputs = self.ref.get_init_inputs()
        for cfg in configs:
            assert set(cfg) <= defaults, set(cfg) - defaults
            assert isinstance(module.ModelNew(*init_inputs, **cfg), torch.nn.Module)
        module.ModelNew(*init_inputs)
        src = (self.kdir / f"{stem}.py").read_text()
        assert "autotune" not in src and "def get_inputs" not in src
        tree = ast.parse(src)
        jitted = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)
                  and any("jit" in ast.unparse(d) for d in n.decorator_list)]
        assert jitted and all(n.startswith(f"_{self.op}_") and n.endswith("_kernel") for n in jitted), jitted
        imported = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        assert {"torch", "torch.nn", "triton", "triton.language"} <= imported

    def check_required(self, required):
        """The required variants and op.yaml's baseline exist; op.yaml has a description."""
        assert not [s for s in required if s not in self.variants]
        assert self.op_yaml["baseline"].split("(")[0] in self.variants   # a file, or one config of it
        assert self.op_yaml["description"]

    def check_op_yaml_shapes(self, size_names):
        """op.yaml's shapes and suites name only the reference's module-level sizes (which
        include size_names) and known dtypes; the 'small' suite has two shapes; the reference
        defines exactly Model, get_inputs and get_init_inputs. Returns each shape's sizes, for
        per-op checks such as the flops formula."""
        ref_tree = ast.parse((self.kdir / "reference.py").read_text())
        sizes = {t.id for n in ref_tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                 for t in n.targets if isinstance(t, ast.Name)}
        assert set(size_names) <= sizes
        shapes = self.op_yaml["shapes"] + [s for ss in self.op_yaml["suites"].values() for s in ss]
        assert len(self.op_yaml["suites"]["small"]) == 2
        params = []
        for s in shapes:
            p = {k: v for k, v in s.items() if k not in ("name", "dtype")}
            assert set(p) <= sizes, s
            assert s.get("dtype", "float32") in DEFAULT_TOL
            params.append(p)
        top = {n.name for n in ref_tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert top == {"Model", "get_inputs", "get_init_inputs"}
        return params
