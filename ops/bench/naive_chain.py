"""The anchor for ops/bench/pipeline.py: what a one-off research server with a queue looks like.

A bare Flask endpoint that sends a Celery chain (inference task | safety task) and blocks on
`AsyncResult.get()` through Celery's Redis result backend. No auth, no job rows, no deadlines, no batching.
Run by the benchmark only: `celery -A ops.bench.naive_chain worker` and `gunicorn ops.bench.naive_chain:web`.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from celery import Celery, chain
from flask import Flask, jsonify, request

REDIS = os.environ["NAIVE_REDIS_URL"]
celery = Celery("naive", broker=REDIS, backend=REDIS)
celery.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                   worker_prefetch_multiplier=1, task_default_queue="naive")
_policy = None
_lock = threading.Lock()


def _get_policy():
    global _policy
    with _lock:
        if _policy is None:
            from workers.policies.registry import load_policy

            _policy = load_policy(os.environ["NAIVE_MODEL"], None, model_dir=Path(os.environ["MODEL_DIR"]))
        return _policy


@celery.task(name="naive.infer")
def infer(body: dict) -> list:
    from workers.gpu.decode import decode_image
    from workers.policies.base import Observation

    policy = _get_policy()
    obs = Observation(images={policy.spec.cameras[0]: decode_image("image", body["image"])},
                      instruction=body["instruction"])
    return policy.predict([obs])[0].actions.tolist()


@celery.task(name="naive.safety")
def safety(actions: list) -> dict:
    from safety import evaluate

    return evaluate(np.asarray(actions), robot_config={"type": "widowx_250"}, mode="clamp").to_dict()


web = Flask(__name__)


@web.post("/infer")
def infer_endpoint():
    result = chain(infer.s(request.get_json()), safety.s()).apply_async()
    return jsonify(result.get(timeout=30))
