"""Golden fixtures: the reference implementations (OpenVLA remote code, LeRobot pi0, openpi) run in their own
pinned environments on our tiny checkpoints; `python -m ops.golden build` writes tests/golden/*.npz.
See docs/golden.md."""
