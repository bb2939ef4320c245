"""Which robot judges a replay's steps (issue 21): the request's, the dataset's, else SAFETY_DEFAULT_ROBOT."""
from __future__ import annotations

from web.services.replays import _printable, judged_by


def test_the_requests_robot_config_wins(settings):
    out = judged_by(settings, {"robot_config": {"type": "ur5e"}}, "widowx")
    assert out == {"robot_source": "request"}  # the request's robot_config and safety are kept as given


def test_the_datasets_robot_in_monitor_mode(settings):
    out = judged_by(settings, {"safety": None}, "WidowX")
    assert out == {"robot_config": {"type": "widowx_250"}, "safety": {"mode": "monitor"},
                   "robot_source": "dataset (WidowX)"}


def test_an_unknown_robot_falls_back_to_the_default_in_the_requested_mode(settings):
    out = judged_by(settings, {"safety": {"mode": "reject"}}, "koch")
    assert out == {"robot_config": {"type": settings.safety_default_robot}, "safety": {"mode": "reject"},
                   "robot_source": "default"}
    assert judged_by(settings, {}, None)["robot_config"] == {"type": settings.safety_default_robot}


def test_a_dataset_robot_name_is_stored_printable():
    assert _printable("wid\x00owx<script>") == "widowxscript"
    assert _printable("\x00\x01") is None and _printable(7) is None and len(_printable("a" * 500)) == 64
