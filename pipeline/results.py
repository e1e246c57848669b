"""The results schema between measuring and everything after it; atomic writes; loading with checks.

One file per (GPU, op): `profiles/<gpu-slug>/<op>/results.json`, raw `.ncu-rep` and logs beside it.
The schema is documented in docs/results.md; bump SCHEMA_VERSION on any incompatible change.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pipeline.errors import ResultsError
from pipeline.records import OpRecord

SCHEMA = "pipeline-results"
SCHEMA_VERSION = 1

# statuses of a variant × shape; only "ok" takes part in the recommendation
STATUSES = ("ok", "incorrect", "suspect", "unsupported", "import-error", "compile-error", "launch-error",
            "crashed", "timeout", "worker-error")


def slug(text: str) -> str:
    """A safe file/folder name: lowercase letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "unnamed"


def path_for(profiles_dir: Path, gpu_name: str, op: str) -> Path:
    return profiles_dir / slug(gpu_name) / slug(op) / "results.json"


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)   # mkstemp makes 0600; results and reports are meant to be read and served
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=False, default=str) + "\n")


def new(op: str, environment: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "op": op, "environment": environment,
            "shapes": []}


def load(path: Path) -> OpRecord:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ResultsError(f"{path}: no such results file") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ResultsError(f"{path}: not a results file (schema != {SCHEMA!r})")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema_version {doc.get('schema_version')} is not {SCHEMA_VERSION}; "
                           "re-run `make profile` to regenerate it")
    for key in ("op", "environment", "shapes"):
        if key not in doc:
            raise ResultsError(f"{path}: missing key '{key}'")
    for i, shape in enumerate(doc["shapes"]):
        for key in ("id", "variants"):
            if key not in shape:
                raise ResultsError(f"{path}: shapes[{i}] missing key '{key}'")
    return OpRecord.of(doc)


def merge_shape(doc: dict[str, Any], shape: dict[str, Any]) -> None:
    """Replace the record of the same shape id, or append: reruns of a subset keep the other shapes."""
    doc["shapes"] = [s for s in doc["shapes"] if s["id"] != shape["id"]] + [shape]


def find_all(profiles_dir: Path) -> list[Path]:
    return sorted(profiles_dir.glob("*/*/results.json"))


def files_at(where: Path) -> list[Path]:
    """A results file, or every <gpu>/<op>/results.json under a folder (a baseline or reference run)."""
    return find_all(where) if where.is_dir() else [where]


def same_op_and_gpu(doc: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The document among `others` of the same op measured on the same GPU model: timings of another model
    do not compare."""
    gpu = doc["environment"].get("gpu_name")
    return next((o for o in others if o["op"] == doc["op"] and o["environment"].get("gpu_name") == gpu), None)


def source_sha256(path: str | Path) -> str:
    """The hash stored per variant and reference (`source_sha256`, `reference_sha256`) and checked by the gate."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_path(stored: str, root: Path, kernels_dir: Path, op: str) -> Path:
    """A source file named in a results file (relative to the project root it was measured in): under `root`
    where it is there, else the file of that name in this project's `kernels_dir`/<op>/ (results copied from
    a project laid out otherwise); the path under `root` when neither exists."""
    at = root / stored
    if at.exists():
        return at
    moved = kernels_dir / op / Path(stored).name
    return moved if moved.exists() else at
