"""Bearer keys: refused before any look-up when malformed; revoked, expired and unknown keys are 401."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from web.accounts import service
from web.accounts.keys import generate_key
from workers.store.db import session_scope


def test_every_v1_route_needs_a_key(client):
    for path in ("/v1/jobs", "/v1/models/list", "/v1/usage", "/v1/jobs/x"):
        resp = client.get(path)
        assert resp.status_code == 401, path
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.get_json()["request_id"]


def test_malformed_and_mistyped_keys(client, make_customer):
    _, key, _ = make_customer()
    typo = key[:-3] + ("A" if key[-3] != "A" else "B") + key[-2:]
    for header in ("Basic abc", "Bearer nope", f"Bearer {typo}", "Bearer " + key[:-1]):
        assert client.get("/v1/usage", headers={"Authorization": header}).status_code == 401


def test_well_formed_unknown_key(client, settings):
    fake = generate_key(pepper=settings.api_key_pepper).plaintext
    assert client.get("/v1/usage", headers={"Authorization": f"Bearer {fake}"}).status_code == 401


def test_valid_key_works_and_revoked_does_not(client, make_customer, settings):
    _, key, headers = make_customer()
    assert client.get("/v1/usage", headers=headers).status_code == 200
    with session_scope(settings.database_url) as s:
        service.revoke_key(s, key)
    assert client.get("/v1/usage", headers=headers).status_code == 401


def test_rotation_keeps_old_key_until_expiry(client, make_customer, settings):
    _, old, old_headers = make_customer()
    with session_scope(settings.database_url) as s:
        _, new = service.rotate_key(s, old, settings.api_key_pepper, grace=timedelta(hours=1))
    assert client.get("/v1/usage", headers=old_headers).status_code == 200
    assert client.get("/v1/usage", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    with session_scope(settings.database_url) as s:
        service.find_key(s, old).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert client.get("/v1/usage", headers=old_headers).status_code == 401


def test_keys_are_stored_only_as_digests(make_customer, db_session):
    from sqlalchemy import select

    from workers.store.models import ApiKey

    _, key, _ = make_customer()
    rows = db_session.execute(select(ApiKey.prefix, ApiKey.digest)).all()
    assert all(key not in (p, d) for p, d in rows)
    assert any(key.startswith(p) for p, _ in rows)


def test_openapi_document_and_docs_need_no_key(client):
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.get_json()["paths"]
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/wait", "/v1/inference", "/v1/models/list",
                 "/v1/usage", "/v1/replays", "/health", "/metrics"):
        assert path in paths, path
    assert client.get("/docs").status_code == 200


def test_a_checked_key_is_trusted_for_auth_cache_s_then_looked_up_again(make_customer, settings):
    """AUTH_CACHE_S (2 s in production): the key is not looked up on every request, and a revocation takes
    effect within that time, not later."""
    import dataclasses
    import time

    from sqlalchemy import event

    from web.app import create_app
    from workers.store.db import get_engine

    app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(settings, auth_cache_s=0.5)})
    client = app.test_client()
    _, key, headers = make_customer()
    lookups = []

    def count(conn, cursor, statement, *a):
        if "api_keys" in statement and statement.lstrip().upper().startswith("SELECT"):
            lookups.append(statement)

    engine = get_engine(settings.database_url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            assert client.get("/v1/usage", headers=headers).status_code == 200
        assert len(lookups) == 1  # one look-up, four cache hits
        with session_scope(settings.database_url) as s:
            service.revoke_key(s, key)
        assert client.get("/v1/usage", headers=headers).status_code == 200  # still trusted, for at most 0.5 s
        time.sleep(0.6)
        assert client.get("/v1/usage", headers=headers).status_code == 401
    finally:
        event.remove(engine, "before_cursor_execute", count)
