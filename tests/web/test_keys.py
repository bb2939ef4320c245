"""API key format, checksum, hashing and Authorization parsing."""

from __future__ import annotations

import hashlib
import hmac
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from web.accounts import keys
from web.accounts.keys import (
    KeyFormatError,
    b62encode,
    check_format,
    generate_key,
    hash_key,
    lookup_prefix,
    parse_bearer,
    verify,
)

PEPPER = "test-pepper-not-a-secret"
KEY = generate_key(pepper=PEPPER).plaintext
HEAD = len("vla_live_")
# Characters a typo or a bad paste can introduce: the key alphabet and a few that are not in it.
TYPO_CHARS = st.sampled_from(keys.ALPHABET + "_- .+/=éІ\t")


def test_generated_key_round_trip() -> None:
    gen = generate_key(pepper=PEPPER)
    assert gen.plaintext.startswith("vla_live_")
    assert len(gen.plaintext) == HEAD + keys.BODY_LEN + keys.CHECK_LEN == 58
    assert set(gen.plaintext[HEAD:]) <= set(keys.ALPHABET)
    assert check_format(gen.plaintext)
    assert gen.prefix == gen.plaintext[: HEAD + 12] == lookup_prefix(gen.plaintext)
    assert gen.digest == hash_key(gen.plaintext, PEPPER)
    assert verify(gen.plaintext, gen.digest, PEPPER)
    assert not verify(gen.plaintext, gen.digest, "another-pepper")


def test_test_environment_and_unknown_environment() -> None:
    gen = generate_key("test", pepper=PEPPER)
    assert gen.plaintext.startswith("vla_test_") and check_format(gen.plaintext)
    assert gen.prefix.startswith("vla_test_") and len(gen.prefix) == len("vla_test_") + 12
    with pytest.raises(ValueError):
        generate_key("prod", pepper=PEPPER)


def test_keys_are_unique_and_random() -> None:
    plaintexts = {generate_key(pepper=PEPPER).plaintext for _ in range(200)}
    assert len(plaintexts) == 200
    assert len({p[: HEAD + 12] for p in plaintexts}) == 200


def test_env_tag_is_covered_by_checksum() -> None:
    swapped = "vla_test_" + KEY[HEAD:]
    assert not check_format(swapped)
    with pytest.raises(KeyFormatError) as err:
        parse_bearer(f"Bearer {swapped}")
    assert err.value.reason == "checksum"


def test_base62_encoding() -> None:
    assert b62encode(0, 3) == "000"
    assert b62encode(61, 1) == "z"
    assert b62encode(62, 2) == "10"
    assert b62encode(2**32 - 1, 6) == "4gfFC3"
    with pytest.raises(ValueError):
        b62encode(62, 1)
    with pytest.raises(ValueError):
        b62encode(-1, 3)


@given(data=st.data())
def test_single_substitution_is_refused(data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(KEY) - 1), label="position")
    char = data.draw(TYPO_CHARS.filter(lambda c: c != KEY[pos]), label="char")
    typo = KEY[:pos] + char + KEY[pos + 1:]
    assert not check_format(typo)


@given(pos=st.integers(0, len(KEY) - 1), char=TYPO_CHARS)
def test_insertion_and_deletion_are_refused(pos: int, char: str) -> None:
    assert not check_format(KEY[:pos] + KEY[pos + 1:])
    assert not check_format(KEY[:pos] + char + KEY[pos:])


@given(pos=st.integers(0, len(KEY) - 2))
def test_adjacent_transposition_is_refused(pos: int) -> None:
    # A swap that straddles body and checksum is only caught with probability 1 - 2**-32, so the
    # deterministic claim is for swaps on one side of that boundary.
    if pos == len(KEY) - keys.CHECK_LEN - 1 or KEY[pos] == KEY[pos + 1]:
        return
    swapped = KEY[:pos] + KEY[pos + 1] + KEY[pos] + KEY[pos + 2:]
    assert not check_format(swapped)


@pytest.mark.parametrize("value", [None, 42, b"bytes", "", "vla_live_", "sk_live_abc", KEY + "0"])
def test_check_format_rejects_non_keys(value: object) -> None:
    assert not check_format(value)


def test_lookup_prefix_refuses_malformed_key() -> None:
    with pytest.raises(KeyFormatError) as err:
        lookup_prefix("vla_live_nope")
    assert err.value.reason == "malformed"


def test_hash_key_is_hmac_sha256_and_needs_a_pepper() -> None:
    expected = hmac.new(PEPPER.encode(), KEY.encode(), hashlib.sha256).hexdigest()
    assert hash_key(KEY, PEPPER) == expected
    assert len(expected) == 64 and set(expected) <= set(string.hexdigits.lower())
    with pytest.raises(ValueError):
        hash_key(KEY, "")


def test_verify_always_takes_the_constant_time_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    digest = hash_key(KEY, PEPPER)
    wrong_last = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    cases = [
        (KEY, digest, True),
        (KEY, wrong_last, False),  # same length, differs only at the end
        (KEY, "", False),  # wrong length: no exception, no shortcut
        (KEY, "ü" * 64, False),  # non-ASCII stored value must not raise TypeError
        ("not-a-key", digest, False),  # malformed key still hashes and compares
    ]
    for key, stored, expected in cases:
        assert verify(key, stored, PEPPER) is expected
    assert len(calls) == len(cases)
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("   ", "missing"),
        (f"Basic {KEY}", "scheme"),
        (KEY, "scheme"),
        ("Bearer", "malformed"),
        ("Bearer   ", "malformed"),
        ("Bearer vla_live_short", "malformed"),
        (f"Bearer {KEY} extra", "malformed"),
        (f"Bearer {KEY[:-1]}{'1' if KEY[-1] != '1' else '2'}", "checksum"),
    ],
)
def test_parse_bearer_errors(header: str | None, reason: str) -> None:
    with pytest.raises(KeyFormatError) as err:
        parse_bearer(header)
    assert err.value.reason == reason
    assert isinstance(err.value, ValueError) and str(err.value)


@pytest.mark.parametrize("header", [f"Bearer {KEY}", f"bearer {KEY}", f"  BEARER   {KEY}  "])
def test_parse_bearer_accepts_valid_key(header: str) -> None:
    assert parse_bearer(header) == KEY
