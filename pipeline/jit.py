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

Numba keeps a kernel's machine code until the source file of the kernel changes, not when a
kernel it calls from another file does: a kernel that compiles others' code into its own (the
snap stage's :func:`~pipeline.snap.batch_kernels.match_trips_kernel`) names those files with
``depends_on``, and its cache is then also renewed when one of them changes.

A kernel's machine code is loaded from the cache with numba's runtime only, not with the
registries of everything numba can compile, which numba's own cache loads first and which
only compiling needs (:class:`_KernelCache`): a process loads the three kernels of the snap
stage in about 0.1 s of CPU instead of 0.23 s. Numba's extensions, also needed only to
compile, are likewise loaded by its compiler only (:func:`_extensions_when_compiling`).

Numba itself (about 0.1 s of CPU to import) is imported only when a kernel is first called, or
its dispatcher asked for: :func:`cached_njit` gives a :class:`LazyKernel`, and the first one
called makes the numba dispatchers of all of them (:func:`load_numba`). A kernel marked
``aot=True`` is called from the ahead-of-time compiled module that ``roadcover warmup`` builds
(:mod:`pipeline.aot`) when there is one for these sources and its arguments are of the types
it was compiled for, so a process that calls only such kernels (``roadcover snap``) never
imports numba.

A small kernel called in an inner loop of another (once per Viterbi step, per heap
operation) is compiled ``inline="always"``: numba then inlines it where it is called instead
of calling it with every array of its arguments, which makes the snap stage's matching about a
fifth cheaper (docs/benchmarks.md, "Snap: speed side by side on Monaco").
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import aot

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "NUMBA_CACHE_DIR"
# the message of numba's RuntimeError when no cache folder is writable (numba.core.caching)
NO_LOCATOR = "no locator available"

Function = Callable[..., Any]


class LazyKernel:
    """A kernel whose numba dispatcher is made when first needed (numba imported then).

    Called, it runs the ahead-of-time compiled kernel when it is marked ``aot`` and
    :func:`pipeline.aot.aot_kernel` has one for its arguments, else its dispatcher. Any other
    attribute is the dispatcher's.
    """

    def __init__(
        self, py_func: Function, depends_on: tuple[str, ...], options: dict[str, Any], aot: bool
    ) -> None:
        self.py_func = py_func
        self.depends_on = depends_on
        self.options = options
        self.aot = aot
        self.made: Any = None  # the numba dispatcher, once made
        functools.update_wrapper(self, py_func)

    def __call__(self, *args: Any) -> Any:
        """Run the kernel: compiled ahead of time if it can be, else with numba."""
        if self.aot:
            compiled = aot.aot_kernel(self.py_func.__name__, args)
            if compiled is not None:
                return compiled(*args)
        return self.dispatcher(*args)

    @property
    def dispatcher(self) -> Any:
        """The numba dispatcher (numba imported and every lazy kernel's made, the first time)."""
        if not _NUMBA_LOADED:  # set once every dispatcher is made and in place
            load_numba()
        return self.made

    def __getattr__(self, name: str) -> Any:
        """Return the dispatcher's attribute (``signatures``, ``stats``, ``py_func``...)."""
        if name == "made":  # not set yet (copies, pickles): no dispatcher
            raise AttributeError(name)
        return getattr(self.dispatcher, name)


def dispatcher_of(kernel: Any) -> Any:
    """Return the numba dispatcher of a kernel of :func:`cached_njit` (numba loaded)."""
    return kernel.dispatcher if isinstance(kernel, LazyKernel) else kernel


_LAZY: list[LazyKernel] = []  # the kernels declared while numba was not loaded
_AOT: list[LazyKernel] = []  # the kernels declared with aot=True


def aot_kernels() -> list[LazyKernel]:
    """Return the kernels declared with ``aot=True`` so far (their modules imported)."""
    return list(_AOT)


_NUMBA_LOADED = False
_LOADING = threading.Lock()


def load_numba() -> None:
    """Make the dispatchers of every :class:`LazyKernel` declared so far (numba imported).

    The kernels' modules then hold the dispatchers in place of the lazy kernels, so numba finds
    dispatchers among the globals of a kernel it compiles (a kernel calling another, inlined or
    not); kernels declared from then on are dispatchers at once.
    """
    global _NUMBA_LOADED
    with _LOADING:  # the first calls of two threads (a Dask worker's) make them once
        if not _NUMBA_LOADED:
            _make_dispatchers()
            _NUMBA_LOADED = True


def _make_dispatchers() -> None:
    """Make the lazy kernels' dispatchers and put them in their modules in their place."""
    for kernel in _LAZY:
        kernel.made = _dispatcher(kernel.py_func, kernel.depends_on, kernel.options)
    made = {id(kernel): kernel.made for kernel in _LAZY}
    for namespace in {id(k.py_func.__globals__): k.py_func.__globals__ for k in _LAZY}.values():
        for name, value in list(namespace.items()):
            if isinstance(value, LazyKernel) and id(value) in made:
                namespace[name] = made[id(value)]
    _LAZY.clear()


def cached_njit(
    function: Function | None = None,
    /,
    depends_on: tuple[str, ...] = (),
    aot: bool = False,
    **options: Any,
) -> Any:
    """``numba.njit(cache=True, **options)``, or without the cache where none can be written.

    Use as ``@cached_njit``, ``@cached_njit(inline="always")`` or
    ``@cached_njit(depends_on=("pipeline.snap.hmm_kernels",))``. The dispatcher is made when
    the kernel is first used (:class:`LazyKernel`), at once if numba is loaded already.

    Parameters
    ----------
    function
        The Python function to compile (given when used without parentheses).
    depends_on
        Modules (dotted names) whose kernels this one calls: the cached machine code is
        renewed when their source changes too, not only the function's own file.
    aot
        Call the kernel from the ahead-of-time compiled module when there is one
        (:mod:`pipeline.aot`; a kernel of the modules of :data:`pipeline.aot.SOURCE_MODULES`).
    **options
        Further options of :func:`numba.njit`.

    Returns
    -------
    The kernel (a :class:`LazyKernel` or numba's dispatcher), or a decorator making one.
    """

    def decorate(py_func: Function) -> Any:
        if _NUMBA_LOADED and not aot:
            return _dispatcher(py_func, depends_on, options)
        kernel = LazyKernel(py_func, depends_on, options, aot)
        if aot:
            _AOT.append(kernel)
        if _NUMBA_LOADED:
            kernel.made = _dispatcher(py_func, depends_on, options)
        else:
            _LAZY.append(kernel)
        return kernel

    return decorate if function is None else decorate(function)


def _dispatcher(py_func: Function, depends_on: tuple[str, ...], options: dict[str, Any]) -> Any:
    """Return numba's dispatcher of ``py_func``, with its on-disk cache where one can be written."""
    from numba import njit

    dispatcher = njit(cache=False, **options)(py_func)
    dispatcher._compilation_chain_init_hook = _extensions_when_compiling
    try:
        dispatcher._cache = _kernel_cache(py_func, depends_on)  # as cache=True, see there
    except RuntimeError as exc:
        if NO_LOCATOR not in str(exc):
            raise
        _warn_uncached()
    return dispatcher


def _extensions_when_compiling() -> None:
    """Stand in for numba's hook before a kernel's call with new argument types: do nothing.

    Numba's own hook loads numba's extensions (the ``numba_extensions`` entry points), for
    which it reads the entry points of every installed package: about 0.01 s of CPU at a
    process's first kernel call, which only compiling needs. Numba's compiler loads them
    itself before it compiles anything (``CPUContext.refresh``); a kernel loaded from the
    cache runs without them (the kernels take numbers and numpy arrays, and tuples of them,
    which no extension types).
    """


@functools.cache
def _kernel_cache_class() -> type[Any]:
    """Return the class of the kernels' on-disk cache (numba imported)."""
    from numba.core import caching
    from numba.core.runtime import rtsys

    class KernelCache(caching.FunctionCache):
        """Numba's on-disk cache of a kernel (what ``cache=True`` gives), loaded at less cost.

        Loading a kernel's machine code from the cache needs numba's runtime (the kernels
        allocate arrays through it), not the compiler's registries of every type and function
        numba knows, which numba's own cache loads first (``target_context.refresh()``: about
        0.2 s of CPU at a process's first cached kernel, of which the modules that the cached
        code refers to, imported all the same, are a third). Here the runtime alone is started
        before a load; a kernel that is not in the cache is compiled as before, and numba's
        compiler loads the registries then.
        """

        def load_overload(self, sig: Any, target_context: Any) -> Any:
            """Return the cached compile result of ``sig``, or None if there is none."""
            rtsys.initialize(target_context)  # what refresh() starts before the registries
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)
            return None  # the guard swallowed an I/O error (on Windows): a miss, compiled anew

    return KernelCache


def _kernel_cache(py_func: Function, modules: tuple[str, ...]) -> Any:
    """Return the cache of ``py_func``, whose source stamp also covers the modules' sources.

    Numba stamps a kernel's cache index with a hash of the kernel's own source file and
    disregards an index of another stamp; with ``modules``, the stamp is that hash and the
    hashes of the modules' files, so an index written before one of them changed is
    disregarded too.

    Raises
    ------
    RuntimeError
        Numba's, when no cache folder can be written (its message holds :data:`NO_LOCATOR`).
    """
    from numba.core import caching

    kernel_cache = _kernel_cache_class()
    if not modules:
        return kernel_cache(py_func)
    files = tuple(_module_file(name) for name in modules)

    def stamped(locator: type[object]) -> type[object]:
        class Stamped(locator):  # type: ignore[valid-type, misc]
            def get_source_stamp(self) -> Any:
                return (super().get_source_stamp(), *(_file_hash(file) for file in files))

        return Stamped

    class Impl(caching.CompileResultCacheImpl):
        _locator_classes = [  # noqa: RUF012 (numba's own class attribute)
            stamped(c) for c in caching.CompileResultCacheImpl._locator_classes
        ]

    class Cache(kernel_cache):  # type: ignore[valid-type, misc]
        _impl_class = Impl

    return Cache(py_func)


def _module_file(name: str) -> Path:
    """Return the source file of a module, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"cached_njit(depends_on=...): no module {name!r}")
    return Path(spec.origin)


def _file_hash(path: Path) -> str:
    """Return the SHA-256 of a file's bytes (as numba stamps a kernel's own source file)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
