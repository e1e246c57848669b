"""Run Triton kernels through the CPU interpreter where there is no NVIDIA GPU.

TRITON_INTERPRET must be set before triton (and so the kernel files) is
imported; nvidia-smi's absence is the cheap check that needs no torch import.
"""
import os
import shutil

if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")
