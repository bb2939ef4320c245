"""API key format, hashing and parsing.

A key looks like ``vla_live_<body><check>``:

* ``vla_`` names the product and ``live_``/``test_`` the environment, so a leaked key is easy to
  recognise (secret scanners, logs) and a test key can never be mistaken for a live one.
* ``<body>`` is 32 bytes from :mod:`secrets` in base62, left-padded to a fixed 43 characters
  (62**43 > 2**256), so every key has the same length and a truncated paste is caught early.
* ``<check>`` is CRC32 of ``vla_<env>_<body>`` in base62, left-padded to 6 characters. Covering the
  environment tag too means flipping ``live``/``test`` also fails the checksum. CRC32 detects every
  single-character substitution inside the body and any change to the checksum itself changes its
  canonical encoding, so one mistyped character is refused without touching the database.

Only ``[A-Za-z0-9_]`` is used: a double-click selects the whole key and no URL escaping is needed.

Storage: the database keeps ``prefix`` (in clear) and ``digest`` = HMAC-SHA256(pepper, key). The
pepper lives in the environment/KMS, not in the database, so a dump alone cannot test guesses. Keys
carry 256 bits of entropy, so a fast keyed hash is enough (no bcrypt, no per-key salt: a salt would
defeat the indexed look-up by digest).

``prefix`` is ``vla_<env>_`` plus the first 12 body characters (e.g. ``vla_live_3kTq9ZbW0aYx``).
It is what a dashboard shows to tell keys apart and what a customer quotes when reporting a leak;
12 base62 characters (~71 bits) make collisions negligible, so it can carry an index, and it
leaves ~185 bits secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from typing import NamedTuple

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase  # base62, 0-9A-Za-z
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
PRODUCT = "vla"
ENVIRONMENTS = ("live", "test")
BODY_BYTES = 32
BODY_LEN = 43  # ceil(256 / log2(62))
CHECK_LEN = 6  # 62**6 > 2**32
PREFIX_BODY_CHARS = 12
SCHEME = "bearer"


class KeyFormatError(ValueError):
    """A credential that cannot be a key of ours; ``reason`` is a stable machine-readable code.

    Reasons: ``missing`` (no header), ``scheme`` (not ``Bearer``), ``malformed`` (wrong prefix,
    length or characters), ``checksum`` (well-formed but the checksum does not match: a typo).
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason


class GeneratedKey(NamedTuple):
    plaintext: str  # shown to the customer once, never stored
    prefix: str  # stored in clear: display and look-up
    digest: str  # stored: HMAC-SHA256(pepper, plaintext), hex


def b62encode(number: int, width: int) -> str:
    """Fixed-width base62; fixed width keeps key length constant and the encoding canonical."""
    if number < 0:
        raise ValueError("number must be non-negative")
    chars = []
    while number:
        number, rem = divmod(number, 62)
        chars.append(ALPHABET[rem])
    if len(chars) > width:
        raise ValueError(f"{number} does not fit in {width} base62 characters")
    return "".join(reversed(chars)).rjust(width, ALPHABET[0])


def _checksum(head: str, body: str) -> str:
    return b62encode(zlib.crc32(f"{head}{body}".encode("ascii")), CHECK_LEN)


def _head(env: str) -> str:
    return f"{PRODUCT}_{env}_"


def generate_key(env: str = "live", *, pepper: str) -> GeneratedKey:
    """Make a new key; the caller stores ``prefix`` and ``digest`` and shows ``plaintext`` once."""
    if env not in ENVIRONMENTS:
        raise ValueError(f"env must be one of {ENVIRONMENTS}, not {env!r}")
    head = _head(env)
    body = b62encode(int.from_bytes(secrets.token_bytes(BODY_BYTES), "big"), BODY_LEN)
    plaintext = f"{head}{body}{_checksum(head, body)}"
    return GeneratedKey(plaintext, lookup_prefix(plaintext), hash_key(plaintext, pepper))


def format_problem(key: object) -> str | None:
    """Why ``key`` cannot be one of ours (``malformed``/``checksum``), or None if it can."""
    if not isinstance(key, str):
        return "malformed"
    head = next((_head(e) for e in ENVIRONMENTS if key.startswith(_head(e))), None)
    if head is None or len(key) != len(head) + BODY_LEN + CHECK_LEN:
        return "malformed"
    rest = key[len(head):]
    # str.isalnum() accepts non-ASCII letters and digits, so check the alphabet explicitly.
    if any(c not in _INDEX for c in rest):
        return "malformed"
    body, check = rest[:BODY_LEN], rest[BODY_LEN:]
    if not hmac.compare_digest(_checksum(head, body), check):
        return "checksum"
    return None


def check_format(key: object) -> bool:
    """True when ``key`` has our prefix, length, alphabet and a matching checksum."""
    return format_problem(key) is None


def lookup_prefix(key: str) -> str:
    """The part of ``key`` stored in clear (see the module docstring); refuses malformed keys."""
    problem = format_problem(key)
    if problem is not None:
        raise KeyFormatError(problem)
    head_len = key.index("_", len(PRODUCT) + 1) + 1
    return key[: head_len + PREFIX_BODY_CHARS]


def hash_key(key: str, pepper: str) -> str:
    """HMAC-SHA256(pepper, key) as lowercase hex; deterministic so it can be looked up by index."""
    if not pepper:
        # An empty pepper silently degrades to an unkeyed hash; refuse instead.
        raise ValueError("pepper must be a non-empty secret")
    return hmac.new(pepper.encode("utf-8"), key.encode("utf-8"), hashlib.sha256).hexdigest()


def verify(key: str, stored_digest: str, pepper: str) -> bool:
    """Whether ``key`` hashes to ``stored_digest``.

    Always computes the HMAC and compares with :func:`hmac.compare_digest`, whatever the key looks
    like, so the time taken does not reveal how many leading characters of the digest matched.
    """
    candidate = hash_key(key, pepper).encode("ascii")
    stored = stored_digest.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(candidate, stored)


def parse_bearer(header_value: str | None) -> str:
    """The key from an ``Authorization`` header value, or :class:`KeyFormatError`.

    The scheme is case-insensitive (RFC 9110 section 11.1); the format and checksum are checked
    here so a typo is answered without a database round trip.
    """
    if header_value is None or not header_value.strip():
        raise KeyFormatError("missing", "Authorization header is missing")
    scheme, _, credentials = header_value.strip().partition(" ")
    if scheme.lower() != SCHEME:
        raise KeyFormatError("scheme", "Authorization scheme must be Bearer")
    key = credentials.strip()
    if not key:
        raise KeyFormatError("malformed", "Bearer credentials are empty")
    problem = format_problem(key)
    if problem == "checksum":
        raise KeyFormatError("checksum", "API key checksum does not match; check for a typo")
    if problem is not None:
        raise KeyFormatError("malformed", "API key is not in the vla_<env>_... format")
    return key
