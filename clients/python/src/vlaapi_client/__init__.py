"""vlaapi-client: call the vlaapi inference service from a robot or an evaluation script.

    from vlaapi_client import VLAClient
    client = VLAClient("http://HOST:8000", api_key="vla_live_...", model="openvla-7b")
    actions = client.act(image, "pick up the red block", deadline_ms=500)   # numpy (chunk, D)
"""
from vlaapi_client.chunks import ChunkPlayer
from vlaapi_client.client import Inference, VLAClient
from vlaapi_client.errors import (
    ActionRejected,
    AuthError,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    Unavailable,
    VLAError,
)

__all__ = ["VLAClient", "Inference", "ChunkPlayer", "VLAError", "AuthError", "InvalidRequest", "NotFound",
           "RateLimited", "Unavailable", "DeadlineExceeded", "ServerError", "ActionRejected"]
__version__ = "0.1.0"
