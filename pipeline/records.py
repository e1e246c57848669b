"""The results file's records, typed: what results.load returns and lane.assemble builds.

A record is the JSON object itself, a dict subclass: the file's schema is unchanged, json.dumps writes a record
as before and code that indexes keys keeps working. What consumers read goes through typed properties instead
of `(v.get("ncu") or {}).get("kernels") or []` chains: `VariantRecord.kernels`, `KernelMetrics.metric(name)`,
`ShapeRecord.copy_timing`, each written once here. `OpRecord.of(doc)` types a whole document; `of` on a record
returns it unchanged, so a function may type what it is given at no cost.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """An event-timed distribution (timing.py): the median and quartiles of its repeats, in ms."""
    median_ms: float
    p25_ms: float
    p75_ms: float
    min_ms: float | None = None
    max_ms: float | None = None
    reps: int | None = None

    @classmethod
    def of(cls, d: dict[str, Any] | None) -> Timing | None:
        if not d or d.get("median_ms") is None:
            return None
        med = d["median_ms"]
        return cls(med, d.get("p25_ms", med), d.get("p75_ms", med), d.get("min_ms"), d.get("max_ms"), d.get("reps"))


class KernelMetrics(dict):
    """One kernel ncu profiled: {"name", "metrics": {ncu name: {"value", "unit"}}, "missing": [...]}."""

    @classmethod
    def of(cls, k: dict[str, Any]) -> KernelMetrics:
        return k if isinstance(k, cls) else cls(k)

    @property
    def name(self) -> str:
        return self["name"]

    @property
    def missing(self) -> list[str]:
        return self.get("missing") or []

    def metric(self, name: str) -> float | None:
        entry = self["metrics"].get(name)
        return None if entry is None else entry["value"]

    def unit(self, name: str) -> str | None:
        entry = self["metrics"].get(name)
        return None if entry is None else entry.get("unit")


class VariantRecord(dict):
    """One variant at one shape: its status, checks, timing and ncu block."""

    @classmethod
    def of(cls, v: dict[str, Any]) -> VariantRecord:
        if isinstance(v, cls):
            return v
        r = cls(v)
        ncu = v.get("ncu")
        if ncu and ncu.get("kernels"):
            r["ncu"] = {**ncu, "kernels": [KernelMetrics.of(k) for k in ncu["kernels"]]}
        return r

    @property
    def name(self) -> str:
        return self["name"]

    @property
    def stem(self) -> str:
        return self.get("stem", self["name"])

    @property
    def status(self) -> str:
        return self["status"]

    @property
    def ok(self) -> bool:
        return self["status"] == "ok"

    @property
    def baseline(self) -> bool:
        return bool(self.get("baseline"))

    @property
    def config(self) -> dict[str, Any]:
        return self.get("config") or {}

    @property
    def timing(self) -> Timing | None:
        return Timing.of(self.get("timing"))

    @property
    def median_ms(self) -> float | None:
        return (self.get("timing") or {}).get("median_ms")

    @property
    def kernel_ms(self) -> float | None:
        """CUPTI kernel time of one call, measured after timing."""
        return (self.get("after_timing") or {}).get("kernel_ms")

    @property
    def ncu(self) -> dict[str, Any]:
        return self.get("ncu") or {}

    @property
    def ncu_status(self) -> str | None:
        return self.ncu.get("status")

    @property
    def kernels(self) -> list[KernelMetrics]:
        return [KernelMetrics.of(k) for k in self.ncu.get("kernels") or []]


class ShapeRecord(dict):
    """One shape of an op: its parameters, reference, copy and matmul timings, and its variants."""

    @classmethod
    def of(cls, s: dict[str, Any]) -> ShapeRecord:
        if isinstance(s, cls):
            return s
        r = cls(s)
        r["variants"] = [VariantRecord.of(v) for v in s.get("variants", [])]
        return r

    @property
    def id(self) -> str:
        return self["id"]

    @property
    def variants(self) -> list[VariantRecord]:
        return self["variants"]

    @property
    def params(self) -> dict[str, Any]:
        return self.get("params") or {}

    @property
    def dtype(self) -> str:
        return self.get("dtype", "")

    @property
    def flops(self) -> int | None:
        return self.get("flops")

    @property
    def min_bytes(self) -> int | None:
        return self.get("min_bytes")

    @property
    def ncu(self) -> dict[str, Any]:
        return self.get("ncu") or {}

    @property
    def detail(self) -> dict[str, Any]:
        """The detail pass's run over the shape's op (pipeline/detail.py); {} where it did not run."""
        return self.get("detail") or {}

    @property
    def wall_s(self) -> dict[str, float]:
        return self.get("wall_s") or {}

    def _timing(self, key: str) -> dict[str, Any] | None:
        return (self.get(key) or {}).get("timing")

    @property
    def reference_timing(self) -> dict[str, Any] | None:
        """torch eager's timing of the reference at this shape (the timing dict, as recommend.tied takes it)."""
        return self._timing("reference")

    @property
    def copy_timing(self) -> dict[str, Any] | None:
        """The device copy of the shape's minimal bytes (the memory floor)."""
        return self._timing("copy")

    @property
    def reference_ms(self) -> float | None:
        return (self.reference_timing or {}).get("median_ms")

    @property
    def copy_ms(self) -> float | None:
        return (self.copy_timing or {}).get("median_ms")


class OpRecord(dict):
    """A results file: one op on one GPU model."""

    @classmethod
    def of(cls, doc: dict[str, Any]) -> OpRecord:
        if isinstance(doc, cls):
            return doc
        r = cls(doc)
        r["shapes"] = [ShapeRecord.of(s) for s in doc.get("shapes", [])]
        return r

    @property
    def op(self) -> str:
        return self["op"]

    @property
    def environment(self) -> dict[str, Any]:
        return self["environment"]

    @property
    def shapes(self) -> list[ShapeRecord]:
        return self["shapes"]

    def shape(self, shape_id: str) -> ShapeRecord | None:
        return next((s for s in self.shapes if s.id == shape_id), None)
