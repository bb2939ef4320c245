"""The GPU runtime's failure callback runs whether the model fails before or after it is registered (a
missing checkpoint fails within milliseconds, sometimes before the worker has registered it: CI saw a
worker keep consuming its queues that way)."""
from __future__ import annotations

import dataclasses

from workers.gpu.runtime import GpuRuntime


def test_when_failed_runs_the_callback_whatever_the_order(settings, tmp_path):
    s = dataclasses.replace(settings, enabled_models=f"broken={tmp_path / 'missing'}")
    late, early = GpuRuntime(s, "broken"), GpuRuntime(s, "broken")  # never started: no thread, no load
    seen: list[tuple[str, str]] = []
    early.when_failed(lambda reason: seen.append(("early", reason)))
    early._failed("load failed")
    late._failed("load failed")
    late.when_failed(lambda reason: seen.append(("late", reason)))
    assert sorted(seen) == [("early", "load failed"), ("late", "load failed")]
    assert late.stopped_consuming == early.stopped_consuming == "load failed"
