"""Evidence against a verified variant's timing, independent of the comparison with the reference.

A variant can return correct values and still be timed wrongly: work left on another stream or thread
escapes the timing events, an output cached across calls costs nothing the second time. Each rule below
reads facts recorded beside the timing (the recheck after the timed repeats, the CUPTI kernel trace, the
device-copy control, ncu's kernel count); a variant that breaks one is `suspect`, kept out of the
recommendation and the gate, with every reason that fired.
"""
from __future__ import annotations

from typing import Any

# A correct kernel reads its inputs and writes its output at least once: finishing faster than the
# device's copy of those bytes by this factor means it skipped them (the best honest kernels reach ~1.0).
FASTER_THAN_COPY = 1.5
# CUPTI kernel time of one call over its event-timed median: the excess ran where the events did not look.
KERNEL_OVER_EVENTS = 1.5
KERNEL_SLACK_MS = 0.005     # event and CUPTI clocks differ by a few µs on the smallest kernels
NCU_SUSPECT = {"no-kernels", "count-mismatch"}
# ncu flushes every cache before each replay (ncu.cache_control: all), so a kernel that reads its inputs
# reads them from DRAM: under this fraction of their bytes read, it did not read them
DRAM_READ_FRACTION = 0.5
READ = "dram__bytes_read.sum"
BYTES = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}     # ncu's units for byte counts


def judge(rec: dict[str, Any], copy_timing: dict[str, Any] | None, input_bytes: int | None = None) -> None:
    """Set `rec` (a variant record measured now) incorrect or suspect where the evidence says so."""
    if rec["status"] != "ok":
        return
    after = rec.get("after_timing") or {}
    if after and not after.get("ok", True) and not after.get("suspect"):
        rec.update(status="incorrect", error=f"on the timed inputs, after timing: {after.get('reason', '')}")
        return
    reasons = suspicions(rec, copy_timing, input_bytes)
    if reasons:
        rec.update(status="suspect", error="; ".join(reasons))


def suspicions(rec: dict[str, Any], copy_timing: dict[str, Any] | None, input_bytes: int | None = None
               ) -> list[str]:
    reasons = []
    after = rec.get("after_timing") or {}
    if after.get("suspect"):
        reasons.append(f"on the timed inputs, after timing: {after.get('reason', '')}")
    streams = sorted(set(rec.get("other_streams") or []) | set(after.get("other_streams") or []))
    if streams:
        reasons.append(f"kernels on a stream the timing events do not see: {', '.join(streams)}")
    median = (rec.get("timing") or {}).get("median_ms")
    traced = [t for t in (rec, after) if "launched" in t]       # GPU runs only: CUPTI traced the call
    if traced and not any(t["launched"] for t in traced):
        reasons.append("a call launches no GPU kernel")
    # the op's declared baseline is the author's own control (often torch eager), not a candidate claiming a kernel
    if traced and rec.get("compiled") == [] and not rec.get("baseline") and any(t["launched"] for t in traced):
        names = sorted({n for t in traced for n in t["launched"]})
        reasons.append(f"compiled no Triton kernel: its output comes from other kernels ({', '.join(names[:3])})")
    kernel_ms = after.get("kernel_ms")
    if median is not None and kernel_ms is not None and kernel_ms > KERNEL_OVER_EVENTS * median + KERNEL_SLACK_MS:
        reasons.append(f"its kernels take {kernel_ms:.4g} ms per call (CUPTI) but the events measured "
                       f"{median:.4g} ms: work ran outside the timed stream")
    copy_ms = (copy_timing or {}).get("median_ms")
    # GPU runs only: on the CPU (interpreter, tiny shapes) both are host-timed microseconds, mostly noise
    if traced and median and copy_ms and copy_ms > FASTER_THAN_COPY * median:
        reasons.append(f"{copy_ms / median:.1f}x faster than the device's copy of the op's minimal bytes "
                       f"({median:.4g} ms against {copy_ms:.4g} ms): it cannot have read its inputs")
    ncu = rec.get("ncu") or {}
    reads = [(k.get("metrics") or {}).get(READ) for k in ncu.get("kernels") or []]
    if ncu.get("status") == "ok" and input_bytes and reads and all(r and r.get("unit") in BYTES for r in reads):
        read = sum(r["value"] * BYTES[r["unit"]] for r in reads)
        if read < DRAM_READ_FRACTION * input_bytes:
            reasons.append(f"its kernels read {read / 1e6:.4g} MB from DRAM (ncu, caches flushed) where its inputs "
                           f"occupy {input_bytes / 1e6:.4g} MB: it did not read them")
    if ncu.get("status") in NCU_SUSPECT:
        reasons.append(f"ncu {ncu['status']}: {ncu.get('error', '')}")
    return reasons
