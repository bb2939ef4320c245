"""Tenancy for server-side datasets: each customer replays REPLAY_DATA_ROOT/<customer>/ only, plus the
operator's opt-in shared folder; "absent" and "not yours" are the same 404 with the same words."""
from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

from tests.integration.replay_helpers import write_dataset
from web.app import create_app

SHARED = "_shared_test"


@pytest.fixture()
def tenants(settings, make_customer, tmp_path):
    """Two customers with one dataset each under a private data root, and one shared dataset."""
    root = tmp_path / "datasets"
    a, b = make_customer(), make_customer()
    paths = {}
    for who, (name, _, _) in (("a", a), ("b", b), ("shared", (SHARED, None, None))):
        folder = root / name
        (folder / f"{who}-data").mkdir(parents=True)  # distinct names: no dataset shadows another
        paths[who] = write_dataset("npz", folder / f"{who}-data")[0].relative_to(folder).as_posix()
    os.symlink(root / b[0] / paths["b"], root / a[0] / "link-to-b.npz")
    yield root, a, b, paths
    shutil.rmtree(root, ignore_errors=True)


def _client(settings, root, shared=""):
    app = create_app({"TESTING": True, "SETTINGS": dataclasses.replace(
        settings, replay_data_root=root, replay_shared_dir=shared)})
    return app.test_client()


def _post(client, headers, path):
    # openvla-slow has no worker: an accepted replay waits in its queue, and tells us the path was allowed.
    return client.post("/v1/replays", json={"model": "openvla-slow", "dataset": {"path": path}}, headers=headers)


def test_own_dataset_is_found(settings, tenants):
    root, a, _, paths = tenants
    resp = _post(_client(settings, root), a[2], paths["a"])
    assert resp.status_code == 202, resp.get_json()


def test_other_tenants_dataset_is_the_same_404_as_absent(settings, tenants):
    root, a, b, paths = tenants
    client = _client(settings, root)
    answers = [_post(client, a[2], p) for p in (f"../{b[0]}/{paths['b']}", "link-to-b.npz", "no-such.npz",
                                                f"/{root}/{b[0]}/{paths['b']}", f"../{SHARED}/{paths['shared']}")]
    for resp in answers:
        assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
        body = resp.get_json()
        assert body["type"].endswith("dataset_not_found") and body["field"] == "dataset.path"
        assert body["detail"].startswith("no dataset ") and body["detail"].endswith(" for this customer")
    assert len({(r.get_json()["type"], r.get_json()["title"]) for r in answers}) == 1


def test_shared_folder_only_when_the_operator_opts_in(settings, tenants):
    root, a, b, paths = tenants
    assert _post(_client(settings, root), a[2], paths["shared"]).status_code == 404
    for who in (a, b):
        assert _post(_client(settings, root, SHARED), who[2], paths["shared"]).status_code == 202


def test_shared_folder_name_must_be_the_operators(settings, tenants):
    """A shared folder not starting with '_' could be a customer's own: it is ignored."""
    root, a, b, paths = tenants
    assert _post(_client(settings, root, b[0]), a[2], paths["b"]).status_code == 404


def test_another_customers_job_is_the_same_404_as_none(client, make_customer):
    from tests.helpers import request_body

    a, b = make_customer()[2], make_customer()[2]
    job = client.post("/v1/jobs", json=request_body(model="openvla-slow"), headers=a).get_json()
    missing = "00000000-0000-0000-0000-000000000000"
    for path in ("", "/wait?timeout=0"):
        theirs = client.get(f"/v1/jobs/{job['id']}{path}", headers=b)
        none = client.get(f"/v1/jobs/{missing}{path}", headers=b)
        assert theirs.status_code == none.status_code == 404
        assert theirs.get_json()["type"] == none.get_json()["type"]
    assert client.delete(f"/v1/jobs/{job['id']}", headers=b).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}", headers=a).get_json()["state"] == "queued"
