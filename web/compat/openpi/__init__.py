"""openpi's websocket policy protocol (openpi `serving/websocket_policy_server.py`), served as its own process
type: `python -m web.compat.openpi` (the `openpi` line of the Procfile)."""
