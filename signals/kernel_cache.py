"""Drop numba's on-disk cache of kernels whose callees in another module changed.

Why: ``@njit(cache=True)`` re-compiles a cached function only when the function's own source file
changes. A kernel that calls a kernel of another module (``replay_kernel.run_pair`` calls
``kernels.window_push``; ``research/cointegration.py`` calls ``kernels.ols_hedge_ratio``) keeps the
callee's old machine code, and its frozen constants, after an update that touched only the
callee's file: the replay kernel would then silently compute something else than the live path.
Each such module declares the files it calls into; when their content changes (a BLAKE2b digest
kept beside numba's cache), its cached functions are flushed and compile again on first use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loguru import logger


def dependency_digest(files: Iterable[Path]) -> str:
    """A digest of the files' bytes, in the order given."""
    digest = hashlib.blake2b(digest_size=16)
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def flush_if_dependencies_changed(namespace: dict[str, Any], dependencies: Iterable[Path], *, name: str) -> bool:
    """Flush the on-disk cache of the cached numba functions module ``name`` defines (found in its
    ``namespace``, ``globals()``) when ``dependencies`` changed since it was written; True if flushed."""
    dispatchers = [v for v in namespace.values() if getattr(v, "_cache", None) is not None
                   and getattr(getattr(v, "py_func", None), "__module__", None) == name]
    if not dispatchers:
        return False
    digest = dependency_digest(dependencies)
    caches = [d._cache for d in dispatchers]  # numba's FunctionCache of each dispatcher
    folder = Path(caches[0]._cache_path)
    stamp = folder / f"{name}.dependencies"
    try:
        if stamp.read_text(encoding="ascii") == digest:
            return False
    except OSError:
        pass  # no stamp yet: a first run, or a cache from before the stamp existed
    for cache in caches:
        cache.flush()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest, encoding="ascii")
    except OSError as exc:  # a read-only install: the cache is flushed again at the next start
        logger.debug("numba cache stamp {} not written: {}", stamp, exc)
    return True
