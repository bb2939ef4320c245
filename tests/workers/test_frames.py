"""The images' side channel (workers/wire/frames.py) against real Redis, the raw layouts against Pillow's
conversion, and the GPU stage's answer when a job's images are gone (real PostgreSQL and Redis)."""
from __future__ import annotations

import io
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from web.accounts import service
from workers.gpu import runtime
from workers.gpu.decode import decode_frame
from workers.stages.inference import run_inference
from workers.store.db import session_scope
from workers.store.models import Job, UsageRecord
from workers.wire import frames, notify


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_stage_then_fetch_is_one_hash_with_the_bytes_as_given_and_an_expiry(redis_client):
    job_id = str(uuid.uuid4())
    a, b = b"\x89PNG first", bytes(range(256)) * 10
    pipe = redis_client.pipeline(transaction=False)
    frames.stage(pipe, job_id, {"base": a, "wrist": b}, ttl_s=frames.ttl_for(2.0))
    pipe.execute()
    assert 2_000 < redis_client.pttl(frames.key(job_id)) <= 32_000
    described = {"base": frames.describe(a, format="PNG"), "wrist": frames.describe(b, format="PNG")}
    assert frames.fetch(redis_client, job_id, described) == {"base": a, "wrist": b}


def test_a_missing_or_altered_image_is_frames_missing_naming_the_camera(redis_client):
    job_id = str(uuid.uuid4())
    described = {"base": frames.describe(b"abc", format="PNG")}
    with pytest.raises(frames.FramesMissing) as missing:
        frames.fetch(redis_client, job_id, described)
    assert missing.value.camera == "base"
    redis_client.hset(frames.key(job_id), "base", b"abd")
    with pytest.raises(frames.FramesMissing, match="differs"):
        frames.fetch(redis_client, job_id, described)
    redis_client.delete(frames.key(job_id))


@pytest.mark.parametrize("shape,dtype", [((24, 32, 3), np.uint8), ((24, 32), np.uint8), ((24, 32, 1), np.uint8),
                                         ((24, 32, 4), np.uint8), ((3, 24, 32), np.uint8), ((24, 32, 3), np.int64)])
def test_raw_frames_decode_to_the_pixels_a_png_of_them_decodes_to(shape, dtype):
    arr = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
    meta = frames.describe(arr.tobytes(), format=frames.RAW, dtype=arr.dtype.str, shape=list(arr.shape))
    got = decode_frame("images.x", arr.tobytes(), meta)
    hwc = np.moveaxis(arr, 0, -1) if shape[0] == 3 else arr
    hwc = hwc[..., 0] if hwc.ndim == 3 and hwc.shape[-1] == 1 else hwc
    want = np.asarray(Image.fromarray(hwc.astype(np.uint8)).convert("RGB"))
    assert got.shape == (24, 32, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(decode_frame("images.x", _png(want), {"format": "PNG"}), want)


@pytest.mark.parametrize("shape,dtype,why", [((24, 32, 3), np.float32, "integer"), ((24, 32, 2), np.uint8, "shape"),
                                             ((4, 4, 4, 3), np.uint8, "shape"), ((5000, 5000), np.uint8, "pixels")])
def test_check_raw_refuses_what_cannot_be_a_camera_frame(shape, dtype, why):
    assert why in frames.check_raw(np.dtype(dtype), shape, 4096 * 4096)


def _job_row(settings, images: dict) -> dict:
    with session_scope(settings.database_url) as s:
        customer = service.create_customer(s, f"cust-{uuid.uuid4().hex[:10]}", "free")
        now = datetime.now(UTC)
        job = Job(customer_id=customer.id, model="openvla-tiny", request_id="req_test", request={},
                  created_at=now, deadline_at=now + timedelta(seconds=30))
        s.add(job)
        s.flush()
        job_id = str(job.id)
    return {"job_id": job_id, "model": "openvla-tiny", "kind": "interactive", "instruction": "pick",
            "images": images, "deadline": time.time() + 30, "created_at": now.timestamp(), "waiter": True,
            "request_id": "req_test", "state": None, "options": {}}


def test_a_job_whose_images_are_gone_ends_failed_images_missing_charged_once_and_wakes_its_waiter(
        settings, redis_client, monkeypatch):
    """Redis lost the hash (or was wiped) before the worker read it: a clear error, never a hang. The stage runs
    in this process, as a GPU worker's task thread runs it; only the worker's name (which the claim records) is
    given here, since a GPU runtime would load a model that this job never reaches."""
    monkeypatch.setattr(runtime, "current", lambda: SimpleNamespace(hostname="gpu-test@host"))
    job = _job_row(settings, {"primary": frames.describe(b"\x89PNG gone", format="PNG")})
    assert run_inference(job, settings) == {"skip": "failed"}
    with session_scope(settings.database_url) as s:
        row = s.get(Job, uuid.UUID(job["job_id"]))
        usage = s.execute(select(UsageRecord).where(UsageRecord.job_id == row.id)).scalars().all()
        assert row.state == "failed" and row.error["code"] == "images_missing"
        assert row.error["field"] == "images.primary" and len(usage) == 1
    token = redis_client.lpop(notify.done_key(job["job_id"]))
    assert token is not None and notify.outcome(token.decode())["state"] == "failed"
