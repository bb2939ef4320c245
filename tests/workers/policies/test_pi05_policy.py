"""pi0.5 through the real loader on its tiny presets (LeRobot 0.6.1 layout and openpi's conversion): the
layouts agree, batching and the prefix cache change nothing, the state reaches the actions only through the
prompt, bf16 keeps the reference's fp32 islands bit for bit, and every bad checkpoint or input is refused
with a message that names it. Agreement with LeRobot itself is tests/golden/test_pi05_golden.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from ops.golden.fixture import load_fixture
from workers.policies.base import Observation
from workers.policies.errors import CheckpointError, PolicyInputError
from workers.policies.loading import family_of
from workers.policies.pi05.layouts import to_native
from workers.policies.pi05.policy import Pi05Policy
from workers.policies.pi05.tiny import STATS
from workers.policies.selfcheck import synthetic_image


@pytest.fixture(scope="module")
def lerobot(tiny_dir: Path) -> Pi05Policy:
    return Pi05Policy.load("pi05-tiny", tiny_dir / "pi05-tiny", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def openpi(tiny_dir: Path) -> Pi05Policy:
    return Pi05Policy.load("pi05-tiny-openpi", tiny_dir / "pi05-tiny-openpi", dtype="float32", device="cpu")


def bin_centres(bins: list[int]) -> np.ndarray:
    """Raw states in the middle of these bins: no epsilon convention can move them to a neighbour."""
    q01, q99 = np.asarray(STATS["state"]["q01"]), np.asarray(STATS["state"]["q99"])
    return q01 + (q99 - q01) * (np.asarray(bins) + 0.5) / 256


def obs(state=None, seed: int = 3, cams: int = 2, size=(224, 224), text: str = "pick up the cup") -> Observation:
    names = ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"][:cams]
    state = bin_centres([10, 40, 90, 128, 129, 170, 200, 250]) if state is None else state
    return Observation(images={c: synthetic_image(40 + i, *size) for i, c in enumerate(names)}, instruction=text,
                       state=np.asarray(state, dtype=np.float64), options={"seed": seed})


def test_spec(lerobot: Pi05Policy, openpi: Pi05Policy) -> None:
    for p in (lerobot, openpi):
        assert (p.spec.family, p.spec.action_dim, p.spec.chunk_length, p.spec.state_dim) == ("pi05", 7, 50, 8)
        assert p.spec.cameras == ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
    assert (lerobot.layout, lerobot.image_convention) == ("lerobot", "lerobot-torch")
    assert (openpi.layout, openpi.image_convention) == ("openpi", "openpi")
    assert openpi.spec.action_type == "ee_delta"


def test_layouts_agree_on_the_same_weights(lerobot: Pi05Policy, openpi: Pi05Policy) -> None:
    """Same weights and prompt, so the same chunk up to rounding: (x / 255 - 0.5) / 0.5 (openpi) and x / 255 * 2 - 1
    (LeRobot) differ in the last bit, and openpi adds 1e-6 to the quantile range."""
    mine, theirs = lerobot.model.state_dict(), openpi.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    o = obs()
    a, b = lerobot.predict([o])[0].actions, openpi.predict([o])[0].actions
    assert lerobot.prompt_ids(o) == openpi.prompt_ids(o)
    np.testing.assert_allclose(lerobot.action_stats.normalize(a), openpi.action_stats.normalize(b), atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_batch_equals_singles_across_cameras_and_sizes(lerobot: Pi05Policy) -> None:
    batch = [obs(seed=1, cams=3), obs(seed=2, cams=1, size=(480, 640), text="open the drawer"), obs(seed=3)]
    together = lerobot.predict(batch)
    for o, res in zip(batch, together, strict=True):
        np.testing.assert_allclose(res.actions, lerobot.predict([o])[0].actions, atol=1e-6, rtol=1e-5)


def test_cached_flow_equals_recomputed_prefix(lerobot: Pi05Policy) -> None:
    o = obs()
    np.testing.assert_allclose(lerobot.predict([o])[0].actions, lerobot.predict([o], recompute_prefix=True)[0].actions,
                               atol=1e-6, rtol=1e-5)


def test_state_reaches_the_actions_through_the_prompt(lerobot: Pi05Policy) -> None:
    """Two states in the same bins give the same prompt and actions; a state one bin away changes both."""
    q01, q99 = np.asarray(STATS["state"]["q01"]), np.asarray(STATS["state"]["q99"])
    centre = bin_centres([5, 33, 61, 89, 117, 145, 173, 201])
    bin_width = (q99 - q01) / 256
    near = centre + bin_width * 0.3
    assert lerobot.prompt_ids(obs(centre)) == lerobot.prompt_ids(obs(near))
    np.testing.assert_array_equal(lerobot.predict([obs(centre)])[0].actions, lerobot.predict([obs(near)])[0].actions)
    far = centre + bin_width * 3
    assert lerobot.prompt_ids(obs(centre)) != lerobot.prompt_ids(obs(far))
    assert not np.allclose(lerobot.predict([obs(centre)])[0].actions, lerobot.predict([obs(far)])[0].actions)


def test_state_bins_clip_as_numpy_digitize(lerobot: Pi05Policy) -> None:
    q01, q99 = np.asarray(STATS["state"]["q01"]), np.asarray(STATS["state"]["q99"])
    bins = lerobot.state_bins(np.where(np.arange(8) % 2, q01 - 1.0, q99 + 1.0))
    assert bins.tolist() == [255, -1] * 4
    assert lerobot.state_bins(q01).tolist() == [0] * 8
    assert "State: 255 -1 255" in lerobot.prompt_text(obs(np.where(np.arange(8) % 2, q01 - 1.0, q99 + 1.0)))


def test_quantile_maps_round_trip(lerobot: Pi05Policy, openpi: Pi05Policy) -> None:
    y = np.linspace(-1.2, 1.2, 7)
    for p in (lerobot, openpi):
        stats = p.action_stats
        np.testing.assert_allclose(stats.normalize(stats.unnormalize(y)), y, atol=1e-12)
        np.testing.assert_allclose(stats.unnormalize(np.full(7, -1.0)), STATS["actions"]["q01"], atol=1e-9)
    # openpi adds 1e-6 to the range both ways; LeRobot uses the range itself
    # (LeRobot reads float32 statistics, openpi float64 JSON: a few 1e-9 apart)
    np.testing.assert_allclose(openpi.action_stats.span - lerobot.action_stats.span, 1e-6, atol=1e-8)


def test_bad_inputs_are_refused(lerobot: Pi05Policy) -> None:
    with pytest.raises(PolicyInputError, match="state"):
        lerobot.validate(obs(np.zeros(5)))
    with pytest.raises(PolicyInputError, match="state"):
        lerobot.validate(Observation(images=obs().images, instruction="x", state=None))
    with pytest.raises(PolicyInputError, match="NaN"):
        lerobot.validate(obs(np.full(8, np.nan)))
    with pytest.raises(PolicyInputError, match="seed"):
        lerobot.validate(Observation(images=obs().images, instruction="x", state=np.zeros(8), options={"seed": -1}))
    with pytest.raises(PolicyInputError, match="missing camera"):
        lerobot.validate(Observation(images={"top": synthetic_image(1)}, instruction="x", state=np.zeros(8)))
    with pytest.raises(PolicyInputError, match="unknown camera"):
        lerobot.validate(Observation(images={**obs().images, "top": synthetic_image(1)}, instruction="x",
                                     state=np.zeros(8)))


def test_bf16_fp32_islands_hold_the_checkpoint_values(tiny_dir: Path) -> None:
    bf16 = Pi05Policy.load("pi05-tiny", tiny_dir / "pi05-tiny", dtype="bfloat16", device="cpu")
    with safe_open(str(tiny_dir / "pi05-tiny" / "model.safetensors"), framework="pt") as f:
        saved = {to_native(k): f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    params = dict(bf16.model.named_parameters())
    islands = [k for k, v in params.items() if v.dtype == torch.float32]
    assert any("dense" in k for k in islands) and any("time_mlp_in" in k for k in islands)
    assert any(v.dtype == torch.bfloat16 for k, v in params.items() if "dit.layers.0.mlp" in k)
    for k in islands:
        assert torch.equal(params[k], saved[k]), k
    assert np.isfinite(bf16.predict([obs()])[0].actions).all()


def test_family_of_tells_openpi_pi05_from_pi0(tiny_dir: Path) -> None:
    from workers.policies.checkpoint import checkpoint_shapes, read_json

    for name, want in (("pi05-tiny-openpi", "pi05"), ("pi0-tiny-openpi", "pi0"), ("pi05-tiny", "pi05")):
        path = tiny_dir / name
        assert family_of(read_json(path / "config.json"), checkpoint_shapes(path)) == want


def _copy(tiny_dir: Path, tmp_path: Path, name: str = "pi05-tiny") -> Path:
    dst = tmp_path / name
    shutil.copytree(tiny_dir / name, dst)
    return dst


def _edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("changes,match", [
    ({"normalization_mapping": {"STATE": "MEAN_STD", "ACTION": "QUANTILES"}}, "MEAN_STD"),
    ({"image_resolution": [224, 256]}, "square"),
    ({"type": "pi0.5"}, "not a pi0.5 layout"),
])
def test_bad_lerobot_configs_are_refused(tiny_dir: Path, tmp_path: Path, changes, match) -> None:
    path = _copy(tiny_dir, tmp_path)
    _edit_config(path, **changes)
    with pytest.raises(CheckpointError, match=match):
        Pi05Policy.load("x", path, dtype="float32", device="cpu")


def test_missing_quantiles_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    path = _copy(tiny_dir, tmp_path, "pi05-tiny-openpi")
    stats_file = path / "assets" / "tiny_robot" / "norm_stats.json"
    stats = json.loads(stats_file.read_text())
    del stats["norm_stats"]["actions"]["q99"]
    stats_file.write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match="actions q01/q99"):
        Pi05Policy.load("x", path, dtype="float32", device="cpu")
    with pytest.raises(CheckpointError, match="asset_id"):
        Pi05Policy.load("x", path, dtype="float32", device="cpu", options={"asset_id": "other"})
    with pytest.raises(CheckpointError, match="unknown pi0.5 option"):
        Pi05Policy.load("x", path, dtype="float32", device="cpu", options={"center_crop": "true"})


def test_openpi_layout_pads_images_as_openpi_client(openpi: Pi05Policy) -> None:
    """openpi's layout resizes as openpi-client does (its recorded output at 480x640)."""
    arrays, _ = load_fixture("openpi_images")
    from ops.golden.inputs import regenerate_images

    source = regenerate_images(arrays["input_specs"], arrays["input_digests"])
    i = next(i for i, img in enumerate(source) if img.shape[:2] == (480, 640))
    want = (torch.from_numpy(arrays[f"resized_{i}"]).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5
    torch.testing.assert_close(openpi.image(source[i]), want, atol=1e-6, rtol=0)


def test_openpi_without_discrete_state(tiny_dir: Path, openpi: Pi05Policy) -> None:
    """openpi's pi05_libero (`discrete_state_input=False`): no state anywhere, pi0's prompt; refused for LeRobot."""
    p = Pi05Policy.load("x", tiny_dir / "pi05-tiny-openpi", dtype="float32", device="cpu",
                        options={"discrete_state": "false"})
    assert p.spec.state_dim is None
    o = obs()
    tok = p.tokenizer
    want = [tok.bos_token_id, *tok("pick up the cup", add_special_tokens=False)["input_ids"],
            *tok("\n", add_special_tokens=False)["input_ids"]]
    assert p.prompt_ids(o) == want and p.prompt_ids(o) != openpi.prompt_ids(o)
    p.validate(Observation(images=o.images, instruction="x", state=None))  # no state needed
    a = p.predict([o])[0].actions
    np.testing.assert_array_equal(a, p.predict([obs(bin_centres([1] * 8))])[0].actions)
    with pytest.raises(CheckpointError, match="true or false"):
        Pi05Policy.load("x", tiny_dir / "pi05-tiny-openpi", dtype="float32", device="cpu",
                        options={"discrete_state": "maybe"})
    with pytest.raises(CheckpointError, match="openpi's"):
        Pi05Policy.load("x", tiny_dir / "pi05-tiny", dtype="float32", device="cpu", options={"discrete_state": "false"})


@pytest.mark.parametrize("jacobian", ["identity", "vjp"])
def test_real_time_chunking_follows_the_executing_actions(lerobot: Pi05Policy, jacobian: str) -> None:
    """pi0.5 through the shared RTC sampler: the guided chunk starts where the executing one is (in the model's
    quantile space), a row without RTC in the same batch is unchanged, and bad RTC input is refused."""
    assert lerobot.spec.real_time_chunking and "rtc" in lerobot.spec.request_options
    executing = lerobot.predict([obs(seed=1)])[0].actions[10:]  # chunk A's actions still to execute
    plain = lerobot.predict([obs(seed=2)])[0].actions
    rtc = {"prev_actions": executing.tolist(), "inference_delay": 3, "jacobian": jacobian}
    guided_obs = obs(seed=2)
    guided_obs.options["rtc"] = rtc
    guided, unguided = lerobot.predict([guided_obs, obs(seed=2)])
    norm = lerobot.action_stats.normalize
    gap = float(np.abs(norm(guided.actions[:3]) - norm(executing[:3])).max())
    plain_gap = float(np.abs(norm(plain[:3]) - norm(executing[:3])).max())
    assert gap < 0.25 * plain_gap, (gap, plain_gap)
    np.testing.assert_allclose(unguided.actions, plain, atol=1e-6, rtol=1e-5)
    bad = obs(seed=2)
    bad.options["rtc"] = {**rtc, "prev_actions": executing[:, :5].tolist()}
    with pytest.raises(PolicyInputError, match="prev_actions"):
        lerobot.validate(bad)
