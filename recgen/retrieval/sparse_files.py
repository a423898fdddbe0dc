"""Read a saved sparse matrix only once its index arrays are known to be inside the matrix.

``scipy.sparse.load_npz`` rebuilds the matrix from the arrays in the file without a full check, and scipy's C++
kernels (products, row slices) trust them: one column index past the matrix, edited into a fitted folder, is a
segfault at the first request. Every npz matrix recgen loads goes through :func:`load_checked_csr`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp


def load_checked_csr(path: str | Path) -> sp.csr_matrix:
    """The matrix in ``path`` as CSR; a ``ValueError`` saying what is wrong when its structure or values are not
    sound (the caller names the file in its own error)."""
    matrix = sp.load_npz(path)
    if matrix.format in ("csr", "csc"):
        matrix.check_format(full_check=True)
    elif matrix.format == "coo":
        rows, cols = matrix.shape
        if len(matrix.row) and not (0 <= matrix.row.min() and matrix.row.max() < rows
                                    and 0 <= matrix.col.min() and matrix.col.max() < cols):
            raise ValueError("an entry lies outside the matrix")
    else:
        raise ValueError(f"a {matrix.format} matrix, not one recgen writes")
    if matrix.data.dtype.kind not in "fiu":
        raise ValueError(f"values of type {matrix.data.dtype}, not numbers")
    if matrix.data.dtype.kind == "f" and not np.isfinite(matrix.data).all():
        raise ValueError("values that are not finite (nan or inf)")
    return matrix.tocsr()
