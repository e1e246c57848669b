"""Profile Triton kernel variants of an op under Nsight Compute and recommend a grid layout."""

__version__ = "0.1.0"
