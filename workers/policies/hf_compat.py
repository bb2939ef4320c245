"""The one place that knows how transformers spells its KV-cache argument.

transformers 5.24 renamed `past_key_values` to `cache` (the old name stays a deprecated alias until 5.40);
up to 5.23 `cache=` is not a parameter at all and silently vanishes into `**kwargs`, so the model runs
*without* the cache and still returns well-formed output. We therefore read each forward's signature
once and pass whichever name it declares, and refuse a forward that declares neither.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from workers.policies.errors import PolicyError

_NAMES = ("cache", "past_key_values")
# The range setup.cfg declares (a test keeps the two equal): the lowest is what `make test-tf-min` runs.
SUPPORTED_TRANSFORMERS = ">=5.18.0,<5.25"


def require_supported_transformers(version: str | None = None) -> None:
    """Refuse, naming the supported range, a transformers outside it. Below 5.18 the failure would otherwise
    be an ImportError deep in a backend (no PI0Config) that names nothing useful."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    if version is None:
        import transformers

        version = transformers.__version__
    try:
        ok = SpecifierSet(SUPPORTED_TRANSFORMERS).contains(Version(version), prereleases=True)
    except InvalidVersion:
        ok = False
    if not ok:
        raise PolicyError(f"transformers {version} is not supported: this service needs transformers"
                          f"{SUPPORTED_TRANSFORMERS} (setup.cfg; docs/models.md)")


@functools.cache
def _cache_param(forward: Callable[..., Any]) -> str:
    params = inspect.signature(forward).parameters  # follows functools.wraps to the real signature
    for name in _NAMES:
        if name in params:
            return name
    raise PolicyError(f"{getattr(forward, '__qualname__', forward)!r} declares neither of {_NAMES}: "
                      "this transformers version is not supported (see setup.cfg)")


def cache_kwarg(module: Any, cache: Any) -> dict[str, Any]:
    """{"cache": cache} or {"past_key_values": cache}, whichever `module.forward` declares."""
    return {_cache_param(type(module).forward): cache}


def output_cache(output: Any) -> Any:
    """The cache a forward returned, under either name."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
