import json
from pathlib import Path

import numpy as np
import pytest

from safety import SafetyConfigError, UnknownProfileError, list_profiles, load_profile
from safety.profiles import ENV_VAR

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILTIN = {"franka_panda", "franka_fr3", "widowx_250", "ur5e", "google_robot"}


def test_builtin_profiles_load_with_required_fields():
    profiles = {p["id"]: p for p in list_profiles()}
    assert BUILTIN <= set(profiles)
    for name in BUILTIN:
        data, cfg = profiles[name], load_profile(name).config
        assert data["source"] and data["version"]
        assert cfg.control_hz > 0 and cfg.v_trans > 0 and cfg.v_rot > 0
        assert np.all(cfg.ws_min < cfg.ws_max)
        assert cfg.action_dim == 7 and cfg.default_mode in ("reject", "clamp", "monitor")


def test_numbers_follow_robot_limits_reference():
    panda, fr3, widowx = (load_profile(n).config for n in ("franka_panda", "franka_fr3", "widowx_250"))
    assert (panda.v_trans, panda.v_rot) == (1.7, 2.5)  # current Franka docs, not the older 1.87/2.75
    assert (fr3.v_trans, fr3.v_rot) == (3.0, 2.5)
    assert widowx.control_hz == 5 and widowx.v_trans == 0.25 and widowx.step_high[0] == 0.05
    google = load_profile("google_robot").config
    assert google.control_hz == 3 and (google.gripper_min, google.gripper_max) == (-1.0, 1.0)


def test_unknown_profile_suggests_close_names():
    with pytest.raises(UnknownProfileError) as err:
        load_profile("franka_pand")
    assert err.value.field == "robot_config.type"
    assert "franka_panda" in err.value.message


def _write(folder, name, **changes):
    data = json.loads(json.dumps(load_profile("widowx_250").data))
    data.update(id=name, **changes)
    (folder / f"{name}.json").write_text(json.dumps(data))


def test_extra_profile_dirs_add_robots(tmp_path, monkeypatch):
    _write(tmp_path, "my_arm", control_hz=20, velocity_limits={"translational": 0.5, "rotational": 1.0})
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    cfg = load_profile("my_arm").config
    assert cfg.control_hz == 20 and cfg.v_trans == 0.5
    assert "my_arm" in {p["id"] for p in list_profiles()}


def test_invalid_profile_file_names_the_field(tmp_path, monkeypatch):
    _write(tmp_path, "broken_arm", velocity_limits={"translational": -1, "rotational": 1.0})
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(SafetyConfigError) as err:
        load_profile("broken_arm")
    assert err.value.field == "profile:broken_arm.json.velocity_limits.translational"


def test_profile_id_must_match_file_name(tmp_path, monkeypatch):
    data = dict(load_profile("ur5e").data)
    (tmp_path / "other.json").write_text(json.dumps(data))
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(SafetyConfigError, match="file name"):
        load_profile("other")


def test_library_imports_without_torch_web_or_workers():
    import subprocess
    import sys

    code = ("import sys, safety; safety.evaluate([0, 0, 0, 0, 0, 0, 1.0], robot_config={'type': 'ur5e'}); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'web', 'workers', 'safetensors')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO_ROOT))
