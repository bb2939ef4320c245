"""MicroBatcher against the real tiny OpenVLA policy (random weights, real checkpoint format and loader).

Ordering tests queue items before `start()`, so the owner's first batch sees them all at once: that makes
priority and isolation checks deterministic instead of racing the owner thread. Latency checks read the
timestamps the batcher records on each future (`future.trace`) rather than timing the test itself.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

from tests.workers.conftest import RESULT_TIMEOUT_S
from workers.gpu.batcher import BACKGROUND
from workers.gpu.items import BatcherStopped, DeadlineExceeded, ModelUnavailable
from workers.policies.base import Observation, Policy
from workers.policies.errors import CheckpointError, PolicyInputError


def make_obs(policy: Policy, seed: int, *, dtype: type = np.uint8, **options) -> Observation:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(32, 32, 3)).astype(dtype)
    return Observation(images={policy.spec.cameras[0]: image}, instruction=f"pick up block {seed}",
                       options=options)


def test_concurrent_clients_share_batches_and_get_their_own_actions(make_batcher, policy: Policy) -> None:
    n = 6
    batcher = make_batcher(max_wait_ms=250.0)  # wide window: 2 slow cores must not split the burst
    observations = [make_obs(policy, seed) for seed in range(n)]
    futures: list = [None] * n
    barrier = threading.Barrier(n)

    def client(i: int) -> None:
        barrier.wait()
        futures[i] = batcher.submit(observations[i], job_id=f"job-{i}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [f.result(RESULT_TIMEOUT_S) for f in futures]

    stats = batcher.stats()
    assert stats["items"] == n and stats["batches"] < n
    assert max(f.trace.batch_size for f in futures) > 1
    assert stats["queue_depth"] == 0 and sum(stats["batch_size_counts"]) == stats["batches"]
    for obs, result in zip(observations, results, strict=True):
        (alone,) = policy.predict([obs])
        # Same-length instructions, so batching adds no padding: the greedy tokens, hence actions, match exactly.
        np.testing.assert_array_equal(result.actions, alone.actions)
        assert result.actions.shape == alone.actions.shape and "queue_ms" in result.timings_ms


def test_bad_observation_fails_only_its_own_future(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(start=False)
    good = [batcher.submit(make_obs(policy, seed)) for seed in range(3)]
    bad = batcher.submit(make_obs(policy, 99, dtype=np.float32))
    batcher.start()

    with pytest.raises(PolicyInputError, match="uint8"):
        bad.result(RESULT_TIMEOUT_S)
    for f in good:
        assert f.result(RESULT_TIMEOUT_S).actions.size > 0
    assert {f.trace.batch_size for f in good} == {3} and len({f.trace.batch_id for f in good}) == 1
    assert batcher.stats()["invalid"] == 1


def test_unknown_unnorm_key_fails_only_its_own_future(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(start=False)
    good = [batcher.submit(make_obs(policy, seed)) for seed in range(2)]
    bad = batcher.submit(make_obs(policy, 7, unnorm_key="no-such-dataset"))
    batcher.start()

    with pytest.raises(PolicyInputError, match="unnorm_key"):
        bad.result(RESULT_TIMEOUT_S)
    for f in good:
        assert f.result(RESULT_TIMEOUT_S).actions.size > 0


class FailsOnMarkedInput(Policy):
    """The real policy plus one injected fault, since no real input passes validate() yet breaks predict():
    a pass containing a marked observation raises, as a device error set off by one input would."""

    def __init__(self, inner: Policy):
        self.inner, self.spec, self.batch_sizes = inner, inner.spec, []

    def validate(self, obs: Observation) -> None:
        self.inner.validate(obs)

    def predict(self, observations: list[Observation]) -> list:
        self.batch_sizes.append(len(observations))
        if any(o.instruction.startswith("poison") for o in observations):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.inner.predict(observations)


def test_failed_batch_falls_back_to_one_by_one(make_batcher, policy: Policy) -> None:
    faulty = FailsOnMarkedInput(policy)
    batcher = make_batcher(lambda: faulty, start=False)
    observations = [make_obs(policy, seed) for seed in range(3)]
    good = [batcher.submit(obs) for obs in observations]
    poison = batcher.submit(Observation(images=observations[0].images, instruction="poison the batch"))
    batcher.start()

    with pytest.raises(RuntimeError, match="illegal memory access"):
        poison.result(RESULT_TIMEOUT_S)
    for obs, fut in zip(observations, good, strict=True):
        (alone,) = policy.predict([obs])
        np.testing.assert_array_equal(fut.result(RESULT_TIMEOUT_S).actions, alone.actions)
    assert faulty.batch_sizes == [4, 1, 1, 1, 1]
    stats = batcher.stats()
    assert stats["fallbacks"] == 1 and stats["errors"] == 1 and stats["items"] == 3


def test_expired_deadline_is_never_computed(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(start=False)
    late = batcher.submit(make_obs(policy, 1), deadline=time.monotonic() - 0.5, job_id="late")
    on_time = batcher.submit(make_obs(policy, 2), deadline=time.monotonic() + 60)
    batcher.start()

    with pytest.raises(DeadlineExceeded, match="late") as info:
        late.result(RESULT_TIMEOUT_S)
    assert info.value.late_by_s > 0 and late.trace.started_at is None
    assert on_time.result(RESULT_TIMEOUT_S).actions.size > 0
    stats = batcher.stats()
    assert stats["expired"] == 1 and stats["items"] == 1


def test_deadline_inside_window_runs_without_waiting(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(max_wait_ms=10_000.0)
    fut = batcher.submit(make_obs(policy, 3), deadline=time.monotonic() + 5.0)
    fut.result(RESULT_TIMEOUT_S)
    assert fut.trace.picked_at - fut.trace.enqueued_at < 1.0


def test_interactive_goes_before_replay(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(start=False, max_batch_size=2)
    replay = [batcher.submit(make_obs(policy, s), priority=BACKGROUND) for s in range(3)]
    interactive = [batcher.submit(make_obs(policy, 10 + s)) for s in range(2)]
    batcher.start()

    for f in interactive + replay:
        f.result(RESULT_TIMEOUT_S)
    assert {f.trace.batch_id for f in interactive} == {1}
    assert min(f.trace.batch_id for f in replay) > 1
    assert [f.trace.batch_id for f in replay] == sorted(f.trace.batch_id for f in replay)  # FIFO


def test_background_share_of_a_batch_is_capped(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(start=False, max_batch_size=4, max_background_per_batch=1)
    replay = [batcher.submit(make_obs(policy, s), priority=BACKGROUND) for s in range(3)]
    interactive = batcher.submit(make_obs(policy, 9))
    batcher.start()

    for f in [*replay, interactive]:
        f.result(RESULT_TIMEOUT_S)
    assert interactive.trace.batch_size == 2
    assert max(f.trace.batch_size for f in replay) == 2 and batcher.stats()["batches"] == 3


def test_lone_client_waits_at_most_the_window(make_batcher, policy: Policy) -> None:
    wait_ms, tolerance_s = 40.0, 0.1
    batcher = make_batcher(max_wait_ms=wait_ms)
    for seed in range(3):  # one at a time: the owner is idle before each
        fut = batcher.submit(make_obs(policy, seed))
        fut.result(RESULT_TIMEOUT_S)
        assert fut.trace.batch_size == 1
        assert fut.trace.picked_at - fut.trace.enqueued_at <= wait_ms / 1e3 + tolerance_s


def test_full_queue_runs_without_waiting(make_batcher, policy: Policy) -> None:
    # Queue the three before the owner starts, so they are all waiting when it first looks.
    batcher = make_batcher(max_batch_size=3, max_wait_ms=10_000.0, start=False)
    futures = [batcher.submit(make_obs(policy, s)) for s in range(3)]
    batcher.start()
    for f in futures:
        f.result(RESULT_TIMEOUT_S)
    assert {f.trace.batch_size for f in futures} == {3}
    assert futures[0].trace.started_at - batcher.stats()["load_s"] - futures[-1].trace.enqueued_at < 1.0


def test_cancelled_future_is_skipped(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(start=False)
    futures = [batcher.submit(make_obs(policy, s)) for s in range(3)]
    assert futures[1].cancel()
    batcher.start()

    futures[0].result(RESULT_TIMEOUT_S), futures[2].result(RESULT_TIMEOUT_S)
    with pytest.raises(CancelledError):
        futures[1].result(0)
    stats = batcher.stats()
    assert stats["cancelled"] == 1 and stats["items"] == 2


def test_loader_failure_is_reported_on_state_and_futures(make_batcher, policy: Policy) -> None:
    def broken_loader() -> Policy:
        raise CheckpointError("checkpoint directory '/nowhere' does not exist")

    batcher = make_batcher(broken_loader, start=False)
    early = batcher.submit(make_obs(policy, 1))
    batcher.start()
    assert batcher.wait_ready(RESULT_TIMEOUT_S) is False
    assert batcher.state == "failed" and isinstance(batcher.error, CheckpointError) and batcher.spec is None

    late = batcher.submit(make_obs(policy, 2))
    for fut in (early, late):
        with pytest.raises(ModelUnavailable, match="failed to load.*nowhere") as info:
            fut.result(RESULT_TIMEOUT_S)
        assert isinstance(info.value.__cause__, CheckpointError)


def test_state_moves_from_loading_to_ready(make_batcher, policy: Policy) -> None:
    gate = threading.Event()
    batcher = make_batcher(lambda: gate.wait(RESULT_TIMEOUT_S) and policy, start=False)
    assert batcher.state == "created"
    batcher.start()
    assert batcher.state == "loading" and not batcher.ready and batcher.spec is None
    gate.set()
    assert batcher.wait_ready(RESULT_TIMEOUT_S) and batcher.spec.name == policy.spec.name


def test_stop_with_drain_runs_what_is_queued(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(start=False, max_wait_ms=10_000.0)
    futures = [batcher.submit(make_obs(policy, s)) for s in range(4)]
    batcher.start()
    assert batcher.stop(timeout=RESULT_TIMEOUT_S, drain=True)
    assert all(f.result(0).actions.size > 0 for f in futures) and batcher.state == "stopped"
    with pytest.raises(BatcherStopped):
        batcher.submit(make_obs(policy, 5)).result(0)


def test_stop_without_drain_fails_what_is_queued(make_batcher, policy: Policy) -> None:
    gate = threading.Event()
    batcher = make_batcher(lambda: gate.wait(RESULT_TIMEOUT_S) and policy, start=False)
    futures = [batcher.submit(make_obs(policy, s)) for s in range(3)]
    batcher.start()
    stopper = threading.Thread(target=batcher.stop, kwargs={"timeout": RESULT_TIMEOUT_S, "drain": False})
    stopper.start()
    for f in futures:
        with pytest.raises(BatcherStopped):
            f.result(RESULT_TIMEOUT_S)
    gate.set()
    stopper.join(RESULT_TIMEOUT_S)
    assert batcher.state == "stopped"


def test_stop_that_times_out_still_fails_every_pending_item(make_batcher, policy: Policy) -> None:
    gate = threading.Event()  # a loader stuck (say, on a slow disk) past the shutdown budget
    batcher = make_batcher(lambda: gate.wait(RESULT_TIMEOUT_S) and policy, start=False)
    futures = [batcher.submit(make_obs(policy, s)) for s in range(3)]
    batcher.start()
    assert batcher.stop(timeout=0.05, drain=True) is False
    for f in futures:
        with pytest.raises(BatcherStopped):
            f.result(0)
    gate.set()
    assert batcher.state == "stopped"


def test_no_item_is_lost_when_stopping_under_concurrent_load(make_batcher, policy: Policy) -> None:
    batcher = make_batcher(max_batch_size=4, max_wait_ms=5.0, max_background_per_batch=2)
    futures: list = []
    lock = threading.Lock()
    stopped = threading.Event()

    def client(i: int) -> None:
        for k in range(9):
            if k == 8:  # one submission certainly after stop(): it must fail, not vanish
                stopped.wait(RESULT_TIMEOUT_S)
            fut = batcher.submit(make_obs(policy, k), priority=(i + k) % 2, job_id=f"{i}-{k}")
            if k % 5 == 4:
                fut.cancel()
            with lock:
                futures.append(fut)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.02)
    batcher.stop(timeout=RESULT_TIMEOUT_S, drain=False)
    stopped.set()
    for t in threads:
        t.join()
    outcomes = {"computed": 0, "cancelled": 0, "stopped": 0}
    for fut in futures:  # result() would time out if an item had been lost
        try:
            fut.result(RESULT_TIMEOUT_S)
            outcomes["computed"] += 1
        except CancelledError:
            outcomes["cancelled"] += 1
        except BatcherStopped:
            outcomes["stopped"] += 1
    assert sum(outcomes.values()) == 6 * 9 and outcomes["stopped"] >= 6
    assert batcher.stats()["items"] == outcomes["computed"]
