"""Compiled kernels: numba's ``njit`` with an on-disk cache that never stops a stage.

Every kernel of the stages is decorated with :func:`cached_njit`. Numba compiles a kernel the
first time it is called with new argument types and keeps the machine code in a cache folder,
the first writable one of:

1. ``NUMBA_CACHE_DIR`` (numba's own setting; Dask workers of a LocalCluster inherit it, workers
   of a cluster of your own need it in their environment, pointing at a shared folder);
2. ``__pycache__`` beside the kernel's source file (an editable install or a writable
   site-packages);
3. ``~/.cache/numba`` (``$XDG_CACHE_HOME/numba``).

When none is writable (a read-only image and HOME), numba's ``cache=True`` would raise at import
(``RuntimeError: cannot cache function ... no locator available``); the kernels are then
compiled without a cache instead, in every process, and one warning says how to fix it.
``roadcover warmup`` (:mod:`pipeline.warmup`) fills the cache at install time.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from numba import njit

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "NUMBA_CACHE_DIR"
# the message of numba's RuntimeError when no cache folder is writable (numba.core.caching)
NO_LOCATOR = "no locator available"

Function = Callable[..., Any]


def cached_njit(function: Function | None = None, /, **options: Any) -> Any:
    """``numba.njit(cache=True, **options)``, or without the cache where none can be written.

    Use as ``@cached_njit`` or ``@cached_njit(inline="always")``.

    Parameters
    ----------
    function
        The Python function to compile (given when used without parentheses).
    **options
        Further options of :func:`numba.njit`.

    Returns
    -------
    The numba dispatcher, or a decorator making one.
    """

    def decorate(py_func: Function) -> Any:
        try:
            return njit(cache=True, **options)(py_func)
        except RuntimeError as exc:
            if NO_LOCATOR not in str(exc):
                raise
            _warn_uncached()
            return njit(cache=False, **options)(py_func)

    return decorate if function is None else decorate(function)


@functools.cache
def _warn_uncached() -> None:
    """Say once per process that the kernels compile anew, and how to have them cached."""
    log.warning(
        "numba: no writable cache folder for the compiled kernels (%s unset or not writable, "
        "package folder and ~/.cache read-only): they compile in every process, seconds per "
        "stage; set %s to a writable folder and run `roadcover warmup` once",
        CACHE_DIR_ENV,
        CACHE_DIR_ENV,
    )
