"""Checkpoint fingerprints: a sha256 of every tensor (name, dtype, shape, bytes) and of every other file, plus
the outputs of fixed inputs (selfcheck.record_outputs), written once by `vlaapi models register` (or
`build-tiny`) and checked by every worker before it reports ready (docs/models.md, "Fingerprints").

Why both: a digest names the tensor that differs (a corrupted copy on one GPU host, a re-saved shard, a
tensor cast to bf16); the outputs catch what a digest cannot see (a different transformers, a changed
preprocessing path). The digests are taken from the safetensors files themselves (header + byte ranges,
memory-mapped, hashed in a thread pool: hashlib releases the GIL), so they run alongside the load.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from workers.policies.checkpoint import shard_files
from workers.policies.errors import CheckpointError

FORMAT = "vlaapi-fingerprint/1"
FILE_NAME = "vlaapi-fingerprint.json"
_LIST_LIMIT = 8


class FingerprintMismatch(CheckpointError):
    """The checkpoint on this host is not the one that was registered; the message names what differs."""


def _header(file: Path) -> tuple[int, dict[str, Any]]:
    with file.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        try:
            return 8 + size, json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{str(file)!r} has no valid safetensors header: {exc}") from exc


def _jobs(ckpt: Path) -> list[tuple[str, Path, int, int, str]]:
    """(name, file, start, end, identity) for every tensor of every shard."""
    jobs = []
    for file in shard_files(ckpt):
        base, header = _header(file)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            ident = json.dumps([name, info["dtype"], info["shape"]])
            jobs.append((name, file, base + start, base + end, ident))
    return jobs


def _hash_range(buf: mmap.mmap | bytes, start: int, end: int, ident: str) -> str:
    h = hashlib.sha256(ident.encode())
    h.update(memoryview(buf)[start:end])
    return h.hexdigest()


def tensor_digests(ckpt: Path, threads: int | None = None) -> dict[str, dict[str, Any]]:
    """{tensor name: {"dtype", "shape", "sha256"}} over every shard (unused tensors included)."""
    jobs = _jobs(ckpt)
    maps: dict[Path, mmap.mmap | bytes] = {}
    for file in {j[1] for j in jobs}:
        with file.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            maps[file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    try:
        with ThreadPoolExecutor(max_workers=threads or min(16, os.cpu_count() or 1)) as pool:
            digests = list(pool.map(lambda j: _hash_range(maps[j[1]], j[2], j[3], j[4]), jobs))
    finally:
        for m in maps.values():
            if isinstance(m, mmap.mmap):
                m.close()
    out = {}
    for (name, _, _, _, ident), digest in zip(jobs, digests, strict=True):
        _, dtype, shape = json.loads(ident)
        out[name] = {"dtype": dtype, "shape": shape, "sha256": digest}
    return dict(sorted(out.items()))


def file_digests(ckpt: Path) -> dict[str, str]:
    """sha256 of every other file (configs, statistics, tokenizer), by path relative to the checkpoint.
    Weights are covered tensor by tensor; hidden files and the fingerprint itself are not part of it."""
    out = {}
    for file in sorted(ckpt.rglob("*")):
        rel = file.relative_to(ckpt).as_posix()
        if (file.is_file() and not file.name.endswith(".safetensors") and file.name != FILE_NAME
                and not any(part.startswith(".") for part in rel.split("/"))):
            out[rel] = hashlib.sha256(file.read_bytes()).hexdigest()
    return out


def locate(ckpt: Path, fingerprint_dir: Path | None) -> Path | None:
    """The fingerprint of `ckpt`: FINGERPRINT_DIR/<checkpoint dir name>.json when that setting names a folder
    holding one (a read-only mount registered elsewhere), else <checkpoint>/vlaapi-fingerprint.json."""
    candidates = ([Path(fingerprint_dir) / f"{ckpt.name}.json"] if fingerprint_dir else []) + [ckpt / FILE_NAME]
    return next((c for c in candidates if c.is_file()), None)


def read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the fingerprint {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("tensors"), dict):
        raise CheckpointError(f"{str(path)!r} is not a {FORMAT} fingerprint; register the checkpoint again")
    return data


def write(path: Path, data: dict[str, Any]) -> None:
    """Atomically (temp file + rename): a worker never reads half a fingerprint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _fmt(items: list[str]) -> str:
    more = len(items) - _LIST_LIMIT
    return ", ".join(items[:_LIST_LIMIT]) + (f" ... (+{more} more)" if more > 0 else "")


def compare_tensors(found: dict[str, dict[str, Any]], registered: dict[str, dict[str, Any]], where: str) -> None:
    """Raise FingerprintMismatch naming every tensor that is missing, extra or different (and how)."""
    missing = sorted(set(registered) - set(found))
    extra = sorted(set(found) - set(registered))
    changed = []
    for name in sorted(set(found) & set(registered)):
        a, b = found[name], registered[name]
        if (a["dtype"], list(a["shape"])) != (b["dtype"], list(b["shape"])):
            changed.append(f"{name} ({a['dtype']} {a['shape']}, registered {b['dtype']} {b['shape']})")
        elif a["sha256"] != b["sha256"]:
            changed.append(f"{name} (values differ)")
    parts = [f"{label} ({len(items)}): {_fmt(items)}"
             for label, items in (("tensors whose digest differs", changed), ("registered tensors missing", missing),
                                  ("unregistered tensors", extra)) if items]
    if parts:
        raise FingerprintMismatch(f"checkpoint {where} does not match its fingerprint: " + "; ".join(parts)
                                  + ". A corrupted or different copy; re-copy it, or `vlaapi models register` it "
                                  "if the change is intended")


def compare_files(found: dict[str, str], registered: dict[str, str], where: str) -> None:
    bad = sorted(k for k in set(found) | set(registered) if found.get(k) != registered.get(k))
    if bad:
        raise FingerprintMismatch(f"checkpoint {where}: file(s) differ from the fingerprint: {_fmt(bad)}")
