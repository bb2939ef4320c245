"""Runs INSIDE the lerobot reference env (lerobot 0.3.3, transformers 4.52.4): LeRobot's PI0Policy on our
tiny pi0 weights, nothing of the project. Usage: python lerobot_pi0_ref.py MODEL_DIR INPUTS.npz OUT.npz

Adaptations, all because the checkpoint is tiny and offline (each is recorded in the output):
  1. PaliGemmaWithExpertConfig, which hard-codes the 2B/300M sizes, gets the tiny checkpoint's sizes;
  2. the tokenizer is the tiny checkpoint's (hub id google/paligemma-3b-pt-224 is unreachable), with
     BOS prepended as PaliGemma's tokenizer does;
  3. float32 run only: LeRobot 0.3.3 casts to torch.bfloat16 inside its pi0 code (weights at init,
     image embeddings, every attention input), so it cannot run in float32 as shipped; for that run
     the two pi0 modules see a `torch` whose bfloat16 is float32. The shipped_* run keeps them;
  4. weights are renamed from the transformers-native names to LeRobot's (table below), every LeRobot
     tensor must be found with its exact shape.
"""
from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.pi0 import modeling_pi0, paligemma_with_expert
from lerobot.policies.pi0.configuration_pi0 import PI0Config
from safetensors.torch import load_file
from tokenizers import processors
from transformers import AutoTokenizer
from transformers.models.auto import CONFIG_MAPPING

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
# LeRobot 0.3.3 names (prefix; transformers >= 4.52 layout, as its code needs) -> transformers-native PI0 names.
RENAMES = (
    ("model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.", "model.vlm.vision_tower."),
    ("model.paligemma_with_expert.paligemma.model.multi_modal_projector.", "model.vlm.multi_modal_projector."),
    ("model.paligemma_with_expert.paligemma.model.language_model.", "model.vlm.language_model."),
    ("model.paligemma_with_expert.paligemma.lm_head.", "model.vlm.language_model.embed_tokens."),
    ("model.paligemma_with_expert.gemma_expert.model.", "model.dit."),
    ("model.paligemma_with_expert.gemma_expert.lm_head.", "model.dit.embed_tokens."),
    ("model.state_proj.", "embed_action_time.state_proj."),
    ("model.action_in_proj.", "embed_action_time.action_in_proj."),
    ("model.action_time_mlp_in.", "embed_action_time.action_time_mlp_in."),
    ("model.action_time_mlp_out.", "embed_action_time.action_time_mlp_out."),
    ("model.action_out_proj.", "action_out_proj."),
)


def gemma_dict(cfg: dict) -> dict:
    """A transformers-5 Gemma config dict in 4.51's spelling (rope_theta, hidden_activation)."""
    keep = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
            "head_dim", "vocab_size", "rms_norm_eps", "max_position_embeddings", "attention_bias")
    out = {k: cfg[k] for k in keep if k in cfg}
    out["rope_theta"] = float((cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta", 10000.0)))
    out["hidden_activation"] = out["hidden_act"] = cfg.get("hidden_act", "gelu_pytorch_tanh")
    return out


def patch_tiny_sizes(cfg: dict) -> None:
    """Adaptation 1."""
    vlm = cfg["vlm_config"]
    vision = {k: v for k, v in vlm["vision_config"].items() if k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size",
        "layer_norm_eps", "hidden_act")}
    text = gemma_dict(vlm["text_config"])
    pg = CONFIG_MAPPING["paligemma"](
        text_config={"model_type": "gemma", **text}, vision_config={"model_type": "siglip_vision_model", **vision,
                                                                    "vision_use_head": False},
        projection_dim=vlm["projection_dim"], image_token_index=vlm.get("image_token_index", vlm.get("image_token_id")),
        vocab_size=text["vocab_size"], hidden_size=text["hidden_size"])
    expert = CONFIG_MAPPING["gemma"](**gemma_dict(cfg["dit_config"]))
    real = modeling_pi0.PaliGemmaWithExpertConfig

    def tiny(**kwargs):
        c = real(**kwargs)
        c.paligemma_config, c.gemma_expert_config = pg, expert
        return c

    modeling_pi0.PaliGemmaWithExpertConfig = tiny


def patch_tokenizer(model_dir: Path):
    """Adaptation 2."""
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    bos = tok.bos_token
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.bos_token_id)])
    modeling_pi0.AutoTokenizer = type("Tok", (), {"from_pretrained": staticmethod(lambda *a, **k: tok)})
    return tok


def lerobot_state(model_dir: Path, wanted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adaptation 3: our tensors under LeRobot's names, checked name by name and shape by shape."""
    ours = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        ours.update(load_file(str(f)))
    out = {}
    for name, ref in wanted.items():
        src = next((new + name[len(old):] for old, new in RENAMES if name.startswith(old)), None)
        if src is None or src not in ours or tuple(ours[src].shape) != tuple(ref.shape):
            raise SystemExit(f"no tensor for LeRobot's {name} {tuple(ref.shape)} (looked for {src})")
        out[name] = ours[src]
    return out


class _TorchFp32:
    """Adaptation 3: `torch`, except that bfloat16 means float32."""

    bfloat16 = torch.float32

    def __getattr__(self, name: str):
        return getattr(torch, name)


def set_fp32(fp32: bool) -> None:
    for mod in (modeling_pi0, paligemma_with_expert):
        mod.torch = _TorchFp32() if fp32 else torch


def make_policy(model_dir: Path, meta: dict, fp32: bool):
    cfg = json.loads((model_dir / "config.json").read_text())
    stats = meta.get("norm_stats", meta)
    dim_s, dim_a = len(stats["state"]["mean"]), len(stats["actions"]["mean"])
    feats = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, 224, 224)) for c in CAMERAS}
    feats["observation.state"] = PolicyFeature(FeatureType.STATE, (dim_s,))
    config = PI0Config(input_features=feats, output_features={"action": PolicyFeature(FeatureType.ACTION, (dim_a,))},
                       proj_width=cfg["dit_config"]["hidden_size"], chunk_size=cfg["chunk_size"],
                       n_action_steps=cfg["chunk_size"], num_steps=cfg["num_inference_steps"], device="cpu")
    dataset_stats = {"observation.state": {k: torch.tensor(stats["state"][k]) for k in ("mean", "std")},
                     "action": {k: torch.tensor(stats["actions"][k]) for k in ("mean", "std")}}
    set_fp32(fp32)
    policy = modeling_pi0.PI0Policy(config, dataset_stats=dataset_stats)
    wanted = {k: v for k, v in policy.state_dict().items() if not k.startswith(("normalize", "unnormalize"))}
    missing, unexpected = policy.load_state_dict(lerobot_state(model_dir, wanted), strict=False)
    assert not unexpected and all(k.startswith(("normalize", "unnormalize")) for k in missing), (missing, unexpected)
    return policy.eval()


def images_of(inp, rows: list[int]) -> dict:
    """The rows' camera images (present in the first row; `rows` share a camera set and an image size) as
    LeRobot takes them: float (B, 3, H, W) in [0, 1], at the size they were given."""
    present = [c for c in CAMERAS if inp[f"present_{c}"][rows[0]]]
    return {f"observation.images.{c}": torch.from_numpy(np.stack([inp[f"image_{r}_{c}"] for r in rows]))
            .permute(0, 3, 1, 2).float() / 255.0 for c in present}


def run(policy, inp, rows: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One LeRobot batch over `rows`: (normalised chunk, actions, the first camera's tower inputs: the images
    after LeRobot's own resize-with-pad and [-1, 1] scaling, as it hands them to the model)."""
    captured = {}
    real = policy.model.sample_actions

    def sample_actions(images, *args, **kwargs):
        captured["tower"] = images[0].float().numpy()
        captured["chunk"] = real(images, *args, **kwargs)
        return captured["chunk"]

    policy.model.sample_actions = sample_actions
    batch = images_of(inp, rows)
    batch["observation.state"] = torch.from_numpy(inp["state"][rows]).float()
    batch["task"] = [str(inp["instructions"][r]) for r in rows]
    policy.reset()
    first = policy.select_action(batch, noise=torch.from_numpy(inp["noise"][rows]).clone())
    actions = torch.stack([first, *policy._action_queue], dim=1)
    del policy.model.sample_actions
    return captured["chunk"].float().numpy(), actions.float().numpy(), captured["tower"]


def main(model_dir: str, inputs_path: str, out_path: str) -> None:
    torch.manual_seed(0)
    model_dir_p = Path(model_dir)
    patch_tiny_sizes(json.loads((model_dir_p / "config.json").read_text()))
    tok = patch_tokenizer(model_dir_p)
    meta = json.loads((model_dir_p / "norm_stats.json").read_text())
    inp = dict(np.load(inputs_path))
    out: dict[str, np.ndarray] = {}
    for tag, fp32 in (("", True), ("shipped_", False)):
        policy = make_policy(model_dir_p, meta, fp32)
        singles = [run(policy, inp, [r]) for r in range(len(inp["instructions"]))]
        out[f"{tag}chunk"] = np.concatenate([c for c, _, _ in singles])
        out[f"{tag}actions"] = np.concatenate([a for _, a, _ in singles])
        for name in ("batch", "sized_batch"):
            chunk, actions, _ = run(policy, inp, [int(r) for r in inp[f"{name}_rows"]])
            out[f"{tag}{name}_chunk"], out[f"{tag}{name}_actions"] = chunk, actions
        if fp32:
            out["tower_inputs"] = np.concatenate([singles[int(r)][2] for r in inp["tower_rows"]])
    out["prompt_ids"] = np.array([tok(f"{s}\n")["input_ids"] for s in inp["instructions"]], dtype=object)
    out["versions"] = np.array(json.dumps({p: importlib.metadata.version(p) for p in
                                           ("lerobot", "transformers", "torch", "tokenizers")}))
    out["prompt_ids"] = np.array(json.dumps([list(map(int, ids)) for ids in out["prompt_ids"]]))
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
