"""Running a nogil numba kernel over many jobs (tiles, blocks of Gaussians) on a pool of Python threads."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _forget_pool_after_fork() -> None:
    """A forked child inherits the pool object but not its threads: start afresh there."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def run_jobs(kernel, n_jobs: int, *args) -> None:
    """Run kernel(jobs, *args) over jobs 0 .. n_jobs - 1 (tiles, blocks) on torch.get_num_threads() threads.

    Plain Python threads around nogil numba kernels, rather than numba's parallel=True: numba's OpenMP
    pool spin-waits after each kernel and starves the torch ops that follow (measured: 2.6x slower
    fwd+bwd), and this way needs no threading layer and is safe to call from several threads at once.
    The jobs are dealt out interleaved (busy image regions are shared) in 4 chunks per thread, taken from
    the pool's queue as threads come free: on a shared machine a thread that loses its core for a time
    slice does not hold up the others.
    """
    global _pool, _pool_size
    n = max(1, min(torch.get_num_threads(), n_jobs))
    if n == 1:
        kernel(np.arange(n_jobs), *args)
        return
    with _pool_lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="cpu_raster"), n
        pool = _pool
    chunks = min(4 * n, n_jobs)
    futures = [pool.submit(kernel, np.arange(i, n_jobs, chunks), *args) for i in range(chunks)]
    for f in futures:
        f.result()
