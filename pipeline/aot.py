"""Kernels compiled ahead of time: the snap stage's three, in an extension module of their own.

``roadcover warmup`` (:mod:`pipeline.warmup`) compiles the kernels the snap stage calls (those
declared ``cached_njit(aot=True)``) once more, with numba's ahead-of-time compiler
(``numba.pycc``), into an extension module, for the argument types the warm-up's own run of the
stage called them with. A process then calls them from that module
(:class:`pipeline.jit.LazyKernel`) without importing numba or loading the kernels from numba's
cache, which costs a ``roadcover snap`` about 0.2 s of CPU (docs/benchmarks.md, "Snap: speed
side by side on Monaco").

The module is named by a key (:func:`module_key`) of the kernels' sources, the versions of
Python, numba and numpy, and the CPU (it is compiled for this CPU, as numba's JIT compiles),
and lies in the first folder of :func:`module_dirs` that holds it (numba's cache folders,
the first writable one when it is built). A process whose sources, versions or CPU have no
module (never built, stale, or not buildable here) calls the kernels through numba as
before, and says so once in its log. Numba's compiled module checks no argument types, so
each call's arguments are checked against the types it was compiled for (written beside it,
:func:`argument_kinds`); a call with others goes to numba's dispatcher.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# the source files of the kernels compiled ahead of time (those declared with
# ``cached_njit(aot=True)``: the snap stage's three) and of the kernels they call
SOURCE_MODULES = (
    "pipeline.snap.batch_kernels",
    "pipeline.snap.graph_kernels",
    "pipeline.snap.group_stats",
    "pipeline.snap.hmm_kernels",
    "pipeline.snap.route_kernels",
    "pipeline.snap.ubodt_kernels",
)
MODULE_PREFIX = "roadcover_kernels_"
FOLDER = "roadcover-aot"  # in a numba cache folder
AOT_ENV = "ROADCOVER_AOT_KERNELS"  # "0": call the kernels through numba only
CACHE_DIR_ENV = "NUMBA_CACHE_DIR"

_disabled = False  # while the warm-up compiles the kernels through numba


@contextmanager
def disabled() -> Iterator[None]:
    """Call the kernels through numba only while in this block (the warm-up's own run)."""
    global _disabled
    before, _disabled = _disabled, True
    try:
        yield
    finally:
        _disabled = before


def module_key() -> str:
    """Return the key naming the module: a hash of the sources, the versions and the CPU."""
    digest = hashlib.sha256()
    for name in SOURCE_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        digest.update(Path(spec.origin).read_bytes())
    versions = (sys.version, importlib.metadata.version("numba"), np.__version__)
    digest.update(repr((versions, cpu_stamp())).encode())
    return digest.hexdigest()[:20]


@functools.cache
def cpu_stamp() -> str:
    """Return what names this CPU: its model and features (Linux), else the platform's name."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    first = text.split("\n\n", 1)[0]
    wanted = ("vendor_id", "cpu family", "model", "model name", "flags")
    lines = [line for line in first.splitlines() if line.split(":")[0].strip() in wanted]
    return f"{platform.machine()} " + " ".join(sorted(lines))


def module_dirs() -> list[Path]:
    """Return the folders the module is looked for in, in numba's order for its cache.

    ``NUMBA_CACHE_DIR``, the ``__pycache__`` folder of the package's kernels, then
    ``$XDG_CACHE_HOME/numba`` (``~/.cache/numba``), each with a ``roadcover-aot`` folder.
    """
    dirs = []
    if os.environ.get(CACHE_DIR_ENV):
        dirs.append(Path(os.environ[CACHE_DIR_ENV]))
    dirs.append(Path(__file__).resolve().parent / "snap" / "__pycache__")
    user_cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    dirs.append(Path(user_cache) / "numba")
    return [folder / FOLDER for folder in dirs]


def module_file(folder: Path, key: str) -> Path:
    """Return the path of the extension module of ``key`` in ``folder``."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return folder / f"{MODULE_PREFIX}{key}{suffix}"


@functools.cache
def loaded_module() -> tuple[ModuleType, dict[str, Any]] | None:
    """Return the module of this key and its kernels' argument kinds, or None (logged once)."""
    if os.environ.get(AOT_ENV) == "0":
        return None
    key = module_key()
    for folder in module_dirs():
        path = module_file(folder, key)
        if path.exists():
            return _import_module(path, key)
    log.info(
        "compiled kernels: no ahead-of-time module for these sources in %s (`roadcover warmup` "
        "builds it); the kernels are loaded with numba",
        ", ".join(str(folder) for folder in module_dirs()),
    )
    return None


def _import_module(path: Path, key: str) -> tuple[ModuleType, dict[str, Any]] | None:
    """Import the extension module at ``path`` with the argument kinds written beside it."""
    try:
        kinds = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        spec = importlib.util.spec_from_file_location(MODULE_PREFIX + key, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (OSError, ImportError, ValueError) as exc:
        log.warning("compiled kernels: %s cannot be loaded (%s); loaded with numba", path, exc)
        return None
    return module, kinds


def aot_kernel(name: str, args: tuple[Any, ...]) -> Callable[..., Any] | None:
    """Return the ahead-of-time compiled kernel ``name`` if there is one for ``args``, else None."""
    if _disabled:
        return None
    loaded = loaded_module()
    if loaded is None:
        return None
    module, kinds = loaded
    if name not in kinds or not matches(args, kinds[name]):
        _say_not_compiled_for(name)
        return None
    kernel: Callable[..., Any] = getattr(module, name)
    return kernel


@functools.cache
def _say_not_compiled_for(name: str) -> None:
    """Log once per kernel that a call's argument types are not those compiled ahead of time."""
    log.info("compiled kernels: %s called with other argument types: loaded with numba", name)


def argument_kinds(numba_types: Any) -> list[Any]:
    """Return numba argument types as plain lists: what :func:`matches` checks a call against.

    An array is ``["array", dtype, ndim, layout, mutable]``, a tuple ``["tuple", [...]]``, a
    number ``["float"]``, ``["int"]`` or ``["bool"]``.
    """
    from numba.core import types

    kinds: list[Any] = []
    for kind in numba_types:
        if isinstance(kind, types.Array):
            dtype = np.dtype(str(kind.dtype)).str
            kinds.append(["array", dtype, kind.ndim, kind.layout, kind.mutable])
        elif isinstance(kind, types.Tuple | types.UniTuple):
            kinds.append(["tuple", argument_kinds(kind.types)])
        elif isinstance(kind, types.Boolean):
            kinds.append(["bool"])
        elif isinstance(kind, types.Integer):
            kinds.append(["int"])
        elif isinstance(kind, types.Float):
            kinds.append(["float"])
        else:
            raise TypeError(f"no ahead-of-time argument of type {kind}")
    return kinds


def matches(args: tuple[Any, ...] | list[Any], kinds: list[Any]) -> bool:
    """Whether ``args`` are of ``kinds``, as numba would type them (:func:`argument_kinds`)."""
    return len(args) == len(kinds) and all(map(_matches, args, kinds))


def _matches(arg: Any, kind: list[Any]) -> bool:
    """Whether one argument is of its kind."""
    tag = kind[0]
    if tag == "array":
        return _array_matches(arg, kind)
    if tag == "tuple":
        return isinstance(arg, tuple) and matches(arg, kind[1])
    if tag == "bool":
        return isinstance(arg, bool | np.bool_)
    if tag == "int":
        return isinstance(arg, int | np.integer) and not isinstance(arg, bool)
    return isinstance(arg, float | np.floating)


def _array_matches(arg: Any, kind: list[Any]) -> bool:
    """Whether ``arg`` is an array of the kind's dtype, dimensions, layout and mutability."""
    _, dtype, ndim, layout, mutable = kind
    if not isinstance(arg, np.ndarray) or arg.dtype.str != dtype or arg.ndim != ndim:
        return False
    flags = arg.flags
    layout_ok = layout == "A" or (layout == "C" and flags.c_contiguous)
    return layout_ok and flags.aligned and bool(flags.writeable) == mutable


def build(dispatchers: dict[str, Any]) -> Path | None:
    """Compile the dispatchers' kernels ahead of time into the module of this key; its path.

    Each kernel is compiled for its one signature compiled by numba so far (the warm-up's).
    Written to the first writable folder of :func:`module_dirs` (the argument kinds first, then
    the module, each moved into place whole). Returns None, with a warning, when no folder is
    writable or numba cannot compile them; the kernels are then loaded with numba.
    """
    key = module_key()
    for folder in module_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".build-", dir=folder) as build_dir:
                return _compile(dispatchers, key, folder, Path(build_dir))
        except OSError as exc:
            log.debug("compiled kernels: %s not writable (%s)", folder, exc)
        except Exception as exc:  # numba's and the C compiler's errors are of many types
            log.warning("compiled kernels: not compiled ahead of time (%s); loaded with numba", exc)
            return None
    log.warning("compiled kernels: no writable folder for the ahead-of-time module")
    return None


def _compile(dispatchers: dict[str, Any], key: str, folder: Path, build_dir: Path) -> Path:
    """Compile the module in ``build_dir``; move it and its argument kinds into ``folder``."""
    name = MODULE_PREFIX + key
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba.pycc's pending deprecation
        from numba.pycc import CC

        cc = CC(name)
    cc.output_dir = str(build_dir)
    cc.target_cpu = "host"  # as numba's JIT compiles (the key names the CPU)
    kinds = {}
    for kernel_name, dispatcher in dispatchers.items():
        (signature,) = dispatcher.signatures
        full = dispatcher.overloads[signature].signature  # with its return type
        cc.export(kernel_name, full)(dispatcher.py_func)
        kinds[kernel_name] = argument_kinds(signature)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cc.compile()
    target = module_file(folder, key)
    (build_dir / "kinds.json").write_text(json.dumps(kinds), encoding="utf-8")
    os.replace(build_dir / "kinds.json", target.with_suffix(".json"))
    os.replace(module_file(build_dir, key), target)
    return target
