"""Celery settings (celery-notes.md has the why of each).

One queue per model (`infer.<model>`, plus `infer.<model>.replay` for replay steps) and a `safety` queue.
Every job is `infer`, which hands on to `safety` itself (workers/stages/handoff.py). Delivery is at least
once; tasks are idempotent by job id.
"""
from workers.settings import get_settings
from workers.wire import broker as _broker
from workers.wire import fastjson as _fastjson

_s = get_settings()

broker_url = _s.redis_url or "redis://127.0.0.1:6379/0"
# Results travel through PostgreSQL and a per-job Redis list (workers/notify.py), not Celery's backend.
result_backend = None
task_ignore_result = True

# At-least-once: ack after the task ran, requeue if the worker process dies, hold one message per thread.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Longer than the longest task: a job's deadline is capped at MAX_DEADLINE_MS, and tasks stop at it.
# kombu scans for unacknowledged messages every interval x throttle seconds (default 10 x 10); scan at
# least twice per visibility timeout so a message of a killed worker comes back soon after it expires.
broker_transport_options = {
    "visibility_timeout": _s.broker_visibility_timeout_s,
    "unacked_restore_interval": max(1, min(10, _s.broker_visibility_timeout_s // 2)),
    "unacked_restore_throttle": 1,
    "queue_order_strategy": "priority",
    # A publish to a Redis that hangs (stopped, or cut off by a partition that drops packets) fails within
    # seconds, so the web answers 503 (with the job's id once its row is committed) and a worker's hand-off
    # retries until the deadline, instead of blocking on a socket with no timeout. The consumer's own BRPOP
    # asks for 1 s at a time, well inside it.
    "socket_timeout": 4.0,
    "socket_connect_timeout": 5.0,
    # kombu drops a BRPOP connection whose reply is overdue by brpop_timeout (1 s) + this, so a consumer on a
    # half-open connection (a partition) reconnects within about 1 + 2 x 3 s instead of 51 s, well before the
    # watchdog (WORKER_WATCHDOG_S) gives up on it and the worker pays a restart.
    "health_check_interval": 3,
}
if broker_url.startswith("sentinel://"):
    # REDIS_URL names the sentinels (workers/wire/sentinel.py); kombu asks them for the master, again after a
    # failover.
    broker_transport_options["master_name"] = _s.redis_sentinel_master
    broker_transport_options["sentinel_kwargs"] = {"socket_timeout": 1.0}
broker_connection_retry_on_startup = True
# Reconnect within a second of the broker's return, not kombu's 2, 4, 6 ... 30 s (workers/wire/consumer.py).
worker_consumer = "workers.wire.consumer:Consumer"
# kombu's Redis transport with one client per channel, not one per command (workers/wire/broker.py); also
# after a reconnect switched to another of the URL's hosts (register: the scheme names our class too).
_broker.register()
if broker_url.startswith(("redis://", "rediss://")):
    broker_transport = "workers.wire.broker:Transport"
elif broker_url.startswith("sentinel://"):
    broker_transport = "workers.wire.broker:SentinelTransport"

# Task messages are JSON written and read by orjson under their own content type (workers/wire/fastjson.py:
# a tenth of kombu's json on a 50-step chunk); "json" stays accepted for control messages, events and anything a
# previous release left queued. Nothing is ever unpickled.
_fastjson.register_message_serializer()
task_serializer = _fastjson.MESSAGE_SERIALIZER
accept_content = ["json", _fastjson.MESSAGE_CONTENT_TYPE]
result_serializer = "json"
event_serializer = "json"

task_routes = ("workers.wire.queues.route_task",)
task_default_queue = "safety"
worker_hijack_root_logger = False
# Task events (three publishes per task: received, started, succeeded) cost a GPU worker and the safety
# worker about as much CPU as the safety check itself, and only Flower's task views read them. So workers
# start with them off and Flower turns them on while it runs (it broadcasts `enable_events` every few
# seconds); `celery -A workers.celery_app control enable_events|disable_events` does the same by hand.
# The web never sends "task-sent" events, which would cost every submission an extra publish.
worker_send_task_events = False
task_send_sent_event = False
# Soft shutdown: give in-flight late-ack tasks time to finish before a cold stop requeues them.
worker_soft_shutdown_timeout = _s.worker_drain_s
