"""Runs INSIDE the openpi-client env: openpi_client.image_tools on fixed images, nothing of the project.

Usage: python openpi_images_ref.py INPUTS.npz OUT.npz
INPUTS holds image_<i> (uint8 HxWx3) and float_<i> (float32 HxWx3 in [0, 1]).
"""
from __future__ import annotations

import importlib.metadata
import json
import sys

import numpy as np
from openpi_client import image_tools

SIZE = 224


def main(inputs_path: str, out_path: str) -> None:
    inp = np.load(inputs_path)
    out: dict[str, np.ndarray] = {}
    for key in inp.files:
        if key.startswith("image_"):
            out[f"resized_{key[len('image_'):]}"] = image_tools.resize_with_pad(inp[key], SIZE, SIZE)
        elif key.startswith("float_"):
            out[f"uint8_{key[len('float_'):]}"] = image_tools.convert_to_uint8(inp[key])
    out["versions"] = np.array(json.dumps({"openpi-client": importlib.metadata.version("openpi-client"),
                                           "numpy": np.__version__,
                                           "pillow": importlib.metadata.version("pillow")}))
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
