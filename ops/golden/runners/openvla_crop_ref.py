"""Runs INSIDE the openvla-tf env (tensorflow 2.15, OpenVLA's pin): upstream's eval-time center crop for
augmentation-trained fine-tunes, nothing of the project.
Usage: python openvla_crop_ref.py OPENVLA_UTILS.py INPUTS.npz OUT.npz

`crop_and_resize` is upstream's own function, compiled from experiments/robot/openvla_utils.py as published
(only that function: the module's other imports need the whole OpenVLA stack). The few lines around it are
get_vla_action's center-crop branch, copied here as they stand upstream.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import sys

import numpy as np
import tensorflow as tf
from PIL import Image


def upstream_crop_and_resize(path: str):
    tree = ast.parse(open(path).read())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "crop_and_resize")
    namespace = {"tf": tf}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), path, "exec"), namespace)  # noqa: S102 - upstream code
    return namespace["crop_and_resize"]


def center_crop(crop_and_resize, img: np.ndarray, crop_scale: float) -> np.ndarray:
    """get_vla_action(center_crop=True), openvla_utils.py."""
    image = Image.fromarray(img).convert("RGB")
    batch_size = 1
    image = tf.convert_to_tensor(np.array(image))
    orig_dtype = image.dtype
    image = tf.image.convert_image_dtype(image, tf.float32)
    image = crop_and_resize(image, crop_scale, batch_size)
    image = tf.clip_by_value(image, 0, 1)
    image = tf.image.convert_image_dtype(image, orig_dtype, saturate=True)
    image = Image.fromarray(image.numpy())
    return np.asarray(image.convert("RGB"))


def main(utils_path: str, inputs_path: str, out_path: str) -> None:
    crop_and_resize = upstream_crop_and_resize(utils_path)
    inp = np.load(inputs_path)
    scale = float(inp["crop_scale"])
    images = sorted((k for k in inp.files if k.startswith("image_")), key=lambda k: int(k.split("_")[1]))
    cropped = np.stack([center_crop(crop_and_resize, inp[k], scale) for k in images])
    versions = {"tensorflow": tf.__version__, "numpy": np.__version__,
                "pillow": importlib.metadata.version("pillow")}
    np.savez(out_path, cropped=cropped, versions=np.array(json.dumps(versions)))


if __name__ == "__main__":
    main(*sys.argv[1:4])
