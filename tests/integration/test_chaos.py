"""The fast fault drill of `make test` (ops/chaos.py has them all): Redis SIGKILLed and restarted under a
steady load, against a private supervised stack. Every accepted job ends, once, and no answer is a 5xx other
than 503."""
from __future__ import annotations

import pytest

from ops.chaos import DrillConfig, format_row, run_drill
from ops.chaos_stack import Stack, StackConfig


@pytest.mark.slow
def test_redis_kill_and_restart_under_load():
    # A folder of its own under the system's temporary directory: PostgreSQL (run as its own user when the
    # tests run as root) must be able to reach it, which pytest's private tmp_path does not allow.
    stack = Stack(StackConfig(deadline_ms=3000, reaper_grace_s=2.0)).start()
    try:
        result = run_drill(stack, "redis", DrillConfig(rate=4.0, warmup_s=2.0, outage_s=3.0, load_after_s=8.0,
                                                       stuck_after_s=25.0))
        stack.wait_healthy(60)
    finally:
        stack.stop()
    print(format_row(result), f"(logs in {stack.dir})")
    assert result["accepted"] > 0
    assert result["stuck_after_60s"] == 0 and result["late_past_deadline_plus_10s"] == 0
    assert result["duplicate_usage_rows"] == 0 and result["non_503_5xx"] == 0
    assert result["recovered_s"] is not None and result["recovered_s"] < 30
    stack.stop(remove=True)  # only once it passed: a failure keeps its logs
