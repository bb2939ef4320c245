"""pi0.5 (openpi / LeRobot `pi05`): model.py the network, layouts.py the checkpoint layouts, policy.py the
request path, tiny.py the tiny presets."""
