"""`new-op NAME --from problem.py`: set up kernels/<NAME>/ from a KernelBench problem file.

The op gets the file verbatim as reference.py, an op.yaml whose one shape is the file's module-level sizes,
and template.py: a variant in the contract's form whose forward raises NotImplementedError, so it is listed
and profiled as `unsupported` until its kernel is written. The problem file is read with `ast`, never run.
"""
from __future__ import annotations

import ast
import copy
import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from pipeline import ops, toplevel
from pipeline.config import Config
from pipeline.errors import ConfigError, PipelineError

TEMPLATE_NAME = "template.py"

TEMPLATE = '''"""{op}: a Triton variant of reference.py (written by `kernel-pipeline new-op`; edit it, or copy it to a new
file per variant).

The contract (README, "Adding an op"):
- `class ModelNew(nn.Module)` takes Model's constructor arguments (`ModelNew(*get_init_inputs(), **config)`);
  forward takes what get_inputs() returns and returns what Model.forward returns: it is checked against the
  reference on fresh random inputs for every seed, its output first filled with NaN.
- LAYOUT: one line on what each program of the grid computes; the report shows it.
- CONFIGS (optional): literal dicts, each a sub-variant, passed as keyword arguments to ModelNew.
- A shape this variant cannot handle: raise NotImplementedError("why"); it is shown as `unsupported` there.
- At most 3 launch-grid dimensions; no test code (`if __name__ == ...`, get_inputs) in this file.
"""
import torch
import torch.nn as nn
import triton
import triton.language as tl

LAYOUT = "one program per BLOCK consecutive elements (replace with this variant's grid)"
# CONFIGS = [dict(BLOCK=1024, num_warps=4), dict(BLOCK=4096, num_warps=8)]


@triton.jit
def {op_id}_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, x, mask=mask)      # a copy: write the op's computation here


class ModelNew(nn.Module):
    def __init__({init_args}):
        super().__init__()
        self.BLOCK, self.num_warps = BLOCK, num_warps

    def forward({forward_args}):
        raise NotImplementedError("write the kernel")
        # e.g. for one contiguous input x whose output has x's shape:
        # out = torch.empty_like(x)
        # grid = (triton.cdiv(x.numel(), self.BLOCK),)
        # {op_id}_kernel[grid](x, out, x.numel(), BLOCK=self.BLOCK, num_warps=self.num_warps)
        # return out
'''


def _signature(cls: ast.ClassDef, method: str, extra: dict[str, int] | None = None) -> str:
    """`method`'s parameters as the reference's Model writes them, with `extra` keyword-only ones added."""
    fn = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == method), None)
    args = copy.deepcopy(fn.args) if fn else ast.arguments([], [ast.arg("self")], None, [], [], None, [])
    if fn is None and method == "forward":
        args.vararg = ast.arg("inputs")
    if args.posonlyargs:
        args.posonlyargs = args.posonlyargs[1:]
    else:
        args.args = args.args[1:]
    for key, value in (extra or {}).items():
        args.kwonlyargs.append(ast.arg(key))
        args.kw_defaults.append(ast.Constant(value))
    text = ast.unparse(args)
    return f"self, {text}" if text else "self"


def sizes(tree: ast.Module) -> dict[str, int | float]:
    """The module-level numbers whose value the file spells out (toplevel.module_names), in file order: positive
    ints and floats; names a shape entry uses for itself (name, dtype, params) are left out."""
    return {n: a.default for n, a in toplevel.module_names(tree).items()
            if a.known and n not in ("name", "dtype", "params") and not isinstance(a.default, bool)
            and (isinstance(a.default, float) or isinstance(a.default, int) and a.default > 0)}


def create(kernels_dir: Path, name: str, problem: Path, root: Config) -> list[Path]:
    """Write kernels_dir/<name>/ (reference.py, op.yaml, template.py) whole, or nothing; returns the files."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise PipelineError(f"'{name}' cannot be an op name: letters, digits, _ and -, starting with a letter or digit")
    op_dir = kernels_dir / name
    if op_dir.exists():
        raise PipelineError(f"{op_dir} exists; new-op does not overwrite an op (pick another name, or remove it)")
    try:
        source = problem.read_bytes()
    except OSError as exc:
        raise PipelineError(f"{problem}: cannot read: {exc.strerror}") from exc
    try:
        tree = ast.parse(source, filename=str(problem))
    except (SyntaxError, ValueError) as exc:
        raise ConfigError(f"{problem}:{getattr(exc, 'lineno', '?')}: not Python: {exc}") from exc
    defined = {n.name: type(n) for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    missing = [n for n, kind in (("Model", ast.ClassDef), ("get_inputs", ast.FunctionDef),
                                 ("get_init_inputs", ast.FunctionDef)) if defined.get(n) is not kind]
    if missing:
        raise ConfigError(f"{problem}: missing {', '.join(missing)}: not a KernelBench problem file "
                          "(class Model, module-level sizes, get_inputs(), get_init_inputs())")
    found = sizes(tree)
    model = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Model")
    op_yaml = (f"# {name}: set up by `kernel-pipeline new-op` from {problem.name}. Every key: `kernel-pipeline config`.\n"
               "# baseline: <variant file stem>   # the variant others are compared with\n")
    op_yaml += yaml.safe_dump({"description": f"{name} (from {problem.name})",
                               "shapes": [{"name": "default", **found}] if found else []},
                              sort_keys=False, default_flow_style=None, allow_unicode=True)
    op_id = re.sub(r"\W", "_", name)
    template = TEMPLATE.format(op=name, op_id=op_id,
                               init_args=_signature(model, "__init__", {"BLOCK": 1024, "num_warps": 4}),
                               forward_args=_signature(model, "forward"))
    kernels_dir.mkdir(parents=True, exist_ok=True)
    # written in a hidden folder beside it (ignored by discovery), checked as an op, then renamed into place
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=kernels_dir))
    try:
        (tmp / "reference.py").write_bytes(source)
        (tmp / "op.yaml").write_text(op_yaml)
        (tmp / TEMPLATE_NAME).write_text(template)
        ops.load_op_dir(tmp, root)
        os.chmod(tmp, 0o755)
        os.rename(tmp, op_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [op_dir / "reference.py", op_dir / "op.yaml", op_dir / TEMPLATE_NAME]
