"""The one exception family and the exit codes. Only `cli.main` turns exceptions into exit codes."""
from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    TARGET_MISSED = 1      # gate: a target missed or a regression
    CANNOT_JUDGE = 2       # bad config / input, or the gate has nothing trustworthy to judge
    NO_GPU = 3             # --require-gpu on a machine without an NVIDIA GPU
    TOOL_ERROR = 4         # ncu missing, refused counters, or failed for every shape
    VARIANT_FAILURES = 5   # --strict: some variant failed to build, run, verify or profile
    INTERRUPTED = 130


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
