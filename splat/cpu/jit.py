"""The numba decorators of the CPU kernels: compiled once, cached on disk, run without the GIL.

`vector_jit` adds the fast-math flags that let LLVM vectorise the per-pixel loops (all but nnan/ninf).
"""

from __future__ import annotations

import numba

_FAST = {"contract", "nsz", "arcp", "afn", "reassoc"}  # no nnan/ninf: kernel masks rely on NaN compares
jit = numba.njit(cache=True, nogil=True, error_model="numpy")
vector_jit = numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
