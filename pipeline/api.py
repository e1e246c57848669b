"""The pipeline's entry points for notebooks and scripts: stored results as rows or a DataFrame."""
from pipeline.flat import COLUMNS, load_frame, rows
from pipeline.results import load

__all__ = ["COLUMNS", "load", "load_frame", "rows"]
