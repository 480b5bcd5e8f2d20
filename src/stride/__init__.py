"""stride: keeps training-data read models (projections) correct."""

__version__ = "0.1.0"
