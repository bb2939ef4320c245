"""Compatibility adapters: existing robot clients (OpenVLA's `deploy.py`, openpi's websocket policy server)
talk to this service unchanged. Each adapter only translates the wire format into the body of
`POST /v1/inference` and runs it through web.services.inference: same key check, limits, deadline, safety
stage and usage as REST."""
