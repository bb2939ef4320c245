"""The client's msgpack bodies (VLAClient(raw_arrays=True)): numpy images as msgpack-numpy maps, as openpi packs
them, encoded files as their bytes; JSON bodies unchanged otherwise."""
from __future__ import annotations

import io

import msgpack
import numpy as np
import pytest
from PIL import Image
from vlaapi_client.images import encode_images, raw_images
from vlaapi_client.wire import MSGPACK, body_kwargs

IMAGE = np.random.default_rng(3).integers(0, 256, (6, 8, 3), dtype=np.uint8)


def _sent(body: dict) -> dict:
    kw = body_kwargs(body, msgpack_body=True)
    assert kw["headers"] == {"Content-Type": MSGPACK}
    return msgpack.unpackb(kw["data"], raw=False, strict_map_key=False)


def test_arrays_travel_as_their_own_bytes():
    view = IMAGE[:, ::-1]  # not C-contiguous: sent in C order
    sent = _sent({"model": "m", **raw_images({"a": view, "b": IMAGE}), "state": np.arange(3, dtype=np.float32),
                  "seed": np.int64(4)})
    a = sent["images"]["a"]
    assert a == {b"__ndarray__": True, b"data": np.ascontiguousarray(view).tobytes(), b"dtype": "|u1",
                 b"shape": [6, 8, 3]}
    assert sent["images"]["b"][b"data"] == IMAGE.tobytes()
    assert sent["state"][b"dtype"] == "<f4" and sent["seed"] == 4


def test_files_and_pil_images():
    png = io.BytesIO()
    Image.fromarray(IMAGE).save(png, format="PNG")
    assert _sent(raw_images(png.getvalue()))["image"] == png.getvalue()  # encoded bytes as they are
    assert _sent(raw_images(Image.fromarray(IMAGE)))["image"][b"data"] == IMAGE.tobytes()


def test_json_bodies_are_unchanged():
    body = {"model": "m", **encode_images(IMAGE)}
    assert body_kwargs(body, msgpack_body=False) == {"json": body} and isinstance(body["image"], str)


def test_only_uint8_images():
    with pytest.raises(TypeError, match="uint8"):
        raw_images(IMAGE.astype(np.float32))
