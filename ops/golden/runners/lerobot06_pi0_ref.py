"""Runs INSIDE the lerobot06 reference env (Python 3.12, lerobot 0.6.1 with its own torch/transformers):
LeRobot's current pi0 (the openpi port behind `lerobot/pi0_base`), its processor pipeline (normalisation
with the statistics it keeps in the processor) and its fp32 islands; nothing of the project.
Usage: python lerobot06_pi0_ref.py MODEL_DIR INPUTS.npz OUT.npz

Adaptations, all because the checkpoint is tiny and offline (each is recorded in the output):
  1. get_gemma_config returns the tiny VLM/expert sizes for gemma_2b/gemma_300m, and the PaliGemma and
     expert classes get the tiny vision tower, projector width and vocabulary (0.6.1 hard-codes them);
  2. the tokenizer step uses the tiny checkpoint's tokenizer, with BOS prepended as PaliGemma's does;
  3. weights are renamed from the transformers-native names to LeRobot's (every tensor found with its shape).
"""
from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.pi0 import configuration_pi0, modeling_pi0, processor_pi0
from safetensors.torch import load_file
from tokenizers import processors
from transformers import AutoTokenizer

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
RENAMES = (  # LeRobot 0.6.1 prefix -> transformers-native PI0 prefix
    ("model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.", "model.vlm.vision_tower."),
    ("model.paligemma_with_expert.paligemma.model.vision_tower.", "model.vlm.vision_tower."),
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


def patch_tiny_sizes(cfg: dict, modeling=modeling_pi0) -> None:
    """Adaptation 1."""
    vlm, dit = cfg["vlm_config"], cfg["dit_config"]
    text, vision = vlm["text_config"], vlm["vision_config"]

    def gemma(c: dict):
        return modeling.GemmaConfig(width=c["hidden_size"], depth=c["num_hidden_layers"],
                                        mlp_dim=c["intermediate_size"], num_heads=c["num_attention_heads"],
                                        num_kv_heads=c["num_key_value_heads"], head_dim=c["head_dim"])

    sizes = {"gemma_2b": gemma(text), "gemma_300m": gemma(dit)}
    modeling.get_gemma_config = sizes.__getitem__
    real_pg, real_expert = modeling.PaliGemmaForConditionalGenerationWithPiGemma, modeling.PiGemmaForCausalLM
    vocab = int(text["vocab_size"])

    def tiny_pg(config):
        vc = config.vision_config
        for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size"):
            setattr(vc, k, vision[k])
        vc.projection_dim = text["hidden_size"]
        config.projection_dim = text["hidden_size"]
        config.text_config.vocab_size = vocab
        config._vocab_size = vocab  # noqa: SLF001 - what 0.6.1 itself sets
        config.image_token_index = vocab
        return real_pg(config=config)

    def tiny_expert(config):
        config.vocab_size = vocab
        return real_expert(config=config)

    modeling.PaliGemmaForConditionalGenerationWithPiGemma = tiny_pg
    modeling.PiGemmaForCausalLM = tiny_expert


def tiny_tokenizer(model_dir: Path, processor=processor_pi0):
    """Adaptation 2."""
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    bos = tok.bos_token
    tok._tokenizer.post_processor = processors.TemplateProcessing(  # noqa: SLF001
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.bos_token_id)])
    step = processor.TokenizerProcessorStep

    def tokenizer_step(**kwargs):
        kwargs.pop("tokenizer_name", None)
        return step(tokenizer=tok, **kwargs)

    processor.TokenizerProcessorStep = tokenizer_step
    return tok


def our_name(name: str) -> str | None:
    return next((new + name[len(old):] for old, new in RENAMES if name.startswith(old)), None)


def param_dtypes(policy) -> dict[str, str]:
    """Our name -> the dtype LeRobot holds that weight in (what its bf16 mode keeps in fp32)."""
    return {our_name(k): str(v.dtype).replace("torch.", "") for k, v in policy.state_dict().items()}


def lerobot_state(model_dir: Path, wanted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adaptation 3."""
    ours = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        ours.update(load_file(str(f)))
    out = {}
    for name, ref in wanted.items():
        src = our_name(name)
        if src is None or src not in ours or tuple(ours[src].shape) != tuple(ref.shape):
            raise SystemExit(f"no tensor for LeRobot's {name} {tuple(ref.shape)} (looked for {src})")
        out[name] = ours[src]
    return out


def make_policy(model_dir: Path, meta: dict, dtype: str):
    cfg = json.loads((model_dir / "config.json").read_text())
    stats = meta.get("norm_stats", meta)
    dim_s, dim_a = len(stats["state"]["mean"]), len(stats["actions"]["mean"])
    feats = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, 224, 224)) for c in CAMERAS}
    feats["observation.state"] = PolicyFeature(FeatureType.STATE, (dim_s,))
    config = configuration_pi0.PI0Config(
        input_features=feats, output_features={"action": PolicyFeature(FeatureType.ACTION, (dim_a,))},
        chunk_size=cfg["chunk_size"], n_action_steps=cfg["chunk_size"], num_inference_steps=cfg["num_inference_steps"],
        dtype=dtype, device="cpu")
    dataset_stats = {"observation.state": {k: torch.tensor(stats["state"][k]) for k in ("mean", "std")},
                     "action": {k: torch.tensor(stats["actions"][k]) for k in ("mean", "std")}}
    policy = modeling_pi0.PI0Policy(config)
    wanted = dict(policy.state_dict())
    state = {k: v.to(wanted[k].dtype) for k, v in lerobot_state(model_dir, wanted).items()}
    missing, unexpected = policy.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    pre, post = processor_pi0.make_pi0_pre_post_processors(config, dataset_stats=dataset_stats)
    return policy.eval(), pre, post


def images_of(inp, rows: list[int]) -> dict:
    """The rows' camera images (present in the first row; `rows` share a camera set and an image size) as
    LeRobot takes them: float (B, 3, H, W) in [0, 1], at the size they were given."""
    present = [c for c in CAMERAS if inp[f"present_{c}"][rows[0]]]
    return {f"observation.images.{c}": torch.from_numpy(np.stack([inp[f"image_{r}_{c}"] for r in rows]))
            .permute(0, 3, 1, 2).float() / 255.0 for c in present}


def run(policy, pre, post, inp, rows: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One batch over `rows`: (normalised chunk, un-normalised actions, the first camera's tower inputs: the
    images after LeRobot's own resize-with-pad and [-1, 1] scaling, as it hands them to the model)."""
    batch = images_of(inp, rows)
    batch["observation.state"] = torch.from_numpy(inp["state"][rows]).float()
    batch["task"] = [str(inp["instructions"][r]) for r in rows]
    noise = torch.from_numpy(inp["noise"][rows]).clone()
    captured = {}
    real = policy.model.sample_actions

    def sample_actions(images, *args, **kwargs):
        captured["tower"] = images[0].float().numpy()
        return real(images, *args, **kwargs)

    policy.model.sample_actions = sample_actions
    chunk = policy.predict_action_chunk(pre(batch), noise=noise)
    del policy.model.sample_actions
    actions = post(chunk)
    return chunk.float().numpy(), actions.float().numpy(), captured["tower"]


def main(model_dir: str, inputs_path: str, out_path: str) -> None:
    torch.manual_seed(0)
    model_dir_p = Path(model_dir)
    patch_tiny_sizes(json.loads((model_dir_p / "config.json").read_text()))
    tok = tiny_tokenizer(model_dir_p)
    meta = json.loads((model_dir_p / "norm_stats.json").read_text())
    inp = dict(np.load(inputs_path))
    out: dict[str, np.ndarray] = {}
    for tag, dtype in (("", "float32"), ("shipped_", "bfloat16")):
        policy, pre, post = make_policy(model_dir_p, meta, dtype)
        singles = [run(policy, pre, post, inp, [r]) for r in range(len(inp["instructions"]))]
        out[f"{tag}chunk"] = np.concatenate([c for c, _, _ in singles])
        out[f"{tag}actions"] = np.concatenate([a for _, a, _ in singles])
        for name in ("batch", "sized_batch"):
            chunk, actions, _ = run(policy, pre, post, inp, [int(r) for r in inp[f"{name}_rows"]])
            out[f"{tag}{name}_chunk"], out[f"{tag}{name}_actions"] = chunk, actions
        if dtype == "float32":
            out["tower_inputs"] = np.concatenate([singles[int(r)][2] for r in inp["tower_rows"]])
        out[f"{tag}param_dtypes"] = np.array(json.dumps(param_dtypes(policy), sort_keys=True))
    out["prompt_ids"] = np.array(json.dumps([tok(f"{s}\n")["input_ids"] for s in inp["instructions"]]))
    out["versions"] = np.array(json.dumps({p: importlib.metadata.version(p) for p in
                                           ("lerobot", "transformers", "torch", "tokenizers")}))
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
