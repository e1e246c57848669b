"""The one exception family and the exit codes. Only `cli.main` turns exceptions into exit codes."""
from __future__ import annotations

import datetime as dt
import enum
import os
import sys
import tempfile
import traceback
from pathlib import Path


class ExitCode(enum.IntEnum):
    OK = 0
    TARGET_MISSED = 1      # gate: a target missed or a regression
    CANNOT_JUDGE = 2       # bad config / input, or the gate has nothing trustworthy to judge
    NO_GPU = 3             # --require-gpu on a machine without an NVIDIA GPU
    TOOL_ERROR = 4         # ncu or ncu_report missing, or a report ncu_report cannot read
    VARIANT_FAILURES = 5   # --strict: some variant failed to build, run, verify or profile
    INTERNAL_ERROR = 70    # a bug in the pipeline (sysexits' EX_SOFTWARE); the traceback goes to crash_log()
    INTERRUPTED = 130      # Ctrl-C, SIGTERM or SIGHUP


class PipelineError(Exception):
    """A problem the user can fix; the message says what, where and how."""

    exit_code = ExitCode.CANNOT_JUDGE


class ConfigError(PipelineError):
    """Malformed or invalid YAML config, or an op directory that breaks the op contract."""


class SelectionError(PipelineError):
    """Unknown op, variant or shape named on the command line."""


class ResultsError(PipelineError):
    """A results file is missing, corrupt, or of an unknown schema version."""


class NoGpuError(PipelineError):
    exit_code = ExitCode.NO_GPU


class ToolError(PipelineError):
    """ncu (or ncu_report) missing or unusable."""

    exit_code = ExitCode.TOOL_ERROR


def crash_log() -> Path:
    """Where an internal error's traceback is written: the system's temporary folder (never the project or
    the installed package), one file per crash."""
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    return Path(tempfile.gettempdir()) / f"kernel-pipeline-crash-{stamp}-{os.getpid()}.log"


def _at_fault(exc: BaseException) -> str:
    """The file an exception names (an OSError's), else the innermost line of the pipeline's own code."""
    if getattr(exc, "filename", None):
        return str(exc.filename)
    frames = traceback.extract_tb(exc.__traceback__)
    here = str(Path(__file__).resolve().parent)
    ours = [f for f in frames if str(Path(f.filename).resolve()).startswith(here)]
    frame = (ours or frames or [None])[-1]
    return f"{frame.filename}:{frame.lineno}" if frame else "unknown place"


def internal_error(exc: BaseException, argv: list[str]) -> str:
    """Write the traceback to crash_log() and return the one-line message for stderr."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    log = crash_log()
    try:
        log.write_text(f"$ {' '.join(argv)}\n" + "".join(traceback.format_exception(exc)))
        where = f"traceback in {log}"
    except OSError as err:
        traceback.print_exception(exc, file=sys.stderr)
        where = f"traceback above ({log}: {err.strerror})"
    return f"internal error at {_at_fault(exc)}: {text}; {where}"
