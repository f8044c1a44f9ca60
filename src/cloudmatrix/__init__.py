"""cloudmatrix: a supernode twin and a small CloudMatrix-Infer serving engine."""

from cloudmatrix.errors import CloudMatrixError

__all__ = ["CloudMatrixError"]
__version__ = "0.1.0"
