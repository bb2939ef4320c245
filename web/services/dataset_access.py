"""Which server-side datasets a customer may replay: REPLAY_DATA_ROOT/<customer name>/ and, when the
operator opts in with REPLAY_SHARED_DIR, REPLAY_DATA_ROOT/<that folder>/ (read by everyone, written by no
one: the service never writes under the data root).

A dataset that does not exist and one that is not the caller's answer the same 404 with the same words, so
a customer cannot learn which datasets others have. The returned path is resolved and checked to lie in one
of the caller's roots (resolve_dataset_path: `..`, absolute names and symlinks out are refused).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from web.errors import ApiError
from workers.replays import DatasetError, resolve_dataset_path
from workers.settings import Settings

log = logging.getLogger(__name__)
# A customer's folder is its name, when the name is one path segment (a leading '_' is the operator's,
# so no customer folder can be the shared one).
_CUSTOMER_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SHARED_DIR = re.compile(r"^_[A-Za-z0-9._-]{1,99}$")


def roots(settings: Settings, customer_name: str) -> list[Path]:
    """The caller's own root first (it shadows a shared dataset of the same name), then the shared one."""
    out = []
    if _CUSTOMER_DIR.match(customer_name) and customer_name not in (".", ".."):
        out.append(settings.replay_data_root / customer_name)
    else:
        log.warning("customer %r has no dataset folder: its name is not one safe path segment", customer_name)
    shared = settings.replay_shared_dir
    if shared and _SHARED_DIR.match(shared):
        out.append(settings.replay_data_root / shared)
    elif shared:
        log.warning("REPLAY_SHARED_DIR=%r ignored: it must be one folder name starting with '_'", shared)
    return out


def locate(settings: Settings, customer_name: str, name: str) -> Path:
    """The resolved path of dataset `name` in one of the caller's roots, or the one 404 for every miss."""
    if not name.strip():
        raise ApiError(422, "invalid_dataset", "a dataset name is required", field="dataset.path")
    for root in roots(settings, customer_name):
        try:
            return resolve_dataset_path(name, root)
        except DatasetError:
            continue
    raise ApiError(404, "dataset_not_found", f"no dataset {name[:200]!r} for this customer", field="dataset.path")
