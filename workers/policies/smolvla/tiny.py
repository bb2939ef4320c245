"""smolvla-tiny: SmolVLA's architecture at toy size in LeRobot 0.6.1's checkpoint layout, random weights from a
fixed seed, and a `vlm/` folder standing in for the SmolVLM2 hub repo (its config, tokenizer and processor
files, no weights).

Toy sizes that still exercise what SmolVLA does: a 6-layer text model of which num_vlm_layers=4 are kept (layer
skipping), self-attention every 2nd layer (layers 0 and 2 self, 1 and 3 cross), a 0.75-wide expert, the vision
tower at SmolVLA's 512 px with 16 px patches and the connector's 4x pixel shuffle (64 tokens per camera),
three cameras, an 8-d state and 7-d actions (pi0-tiny's statistics).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from transformers import SmolVLMConfig

from workers.policies.checkpoint import save_sharded, write_json
from workers.policies.smolvla.layout import VLM_DIR, Arch
from workers.policies.smolvla.model import SmolVLAModel
from workers.policies.tiny import PI0_NORM_STATS, SEED, spread_init
from workers.policies.tiny_pi0_layouts import _write_processors
from workers.policies.tiny_tokenizer import save_tokenizer, train_bpe

BASE_VOCAB = 512
CAMERAS = ("camera1", "camera2", "camera3")
IMAGE_TOKENS = {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}
ARCH = Arch(num_vlm_layers=4, self_attn_every_n_layers=2, expert_width_multiplier=0.75)
HUB_VLM = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"  # what a real checkpoint names; tiny reads vlm/


def vlm_config(vocab: int, image_token_id: int) -> SmolVLMConfig:
    text = {"model_type": "llama", "vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "rms_norm_eps": 1e-5, "max_position_embeddings": 2048, "tie_word_embeddings": False}
    vision = {"model_type": "smolvlm_vision", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "patch_size": 16, "image_size": ARCH.image_size}
    return SmolVLMConfig(text_config=text, vision_config=vision, scale_factor=4, image_token_id=image_token_id,
                         tie_word_embeddings=False)


def _write_vlm_folder(folder: Path) -> SmolVLMConfig:
    """config.json, tokenizer and processor files, as the hub repo of the VLM has them."""
    tok = train_bpe(BASE_VOCAB, ["<unk>", "<|im_start|>", "<end_of_utterance>"], seed=SEED)
    extra = [IMAGE_TOKENS[k] for k in ("fake_image_token", "image_token", "global_image_token")]
    save_tokenizer(tok, folder, bos="<|im_start|>", eos="<end_of_utterance>", unk="<unk>", pad="<|im_end|>",
                   extra_special=extra, add_bos=False, max_length=2048)
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    tok_cfg["extra_special_tokens"] = IMAGE_TOKENS  # what SmolVLMProcessor and LeRobot read as attributes
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    cfg = vlm_config(tok.get_vocab_size(), tok.token_to_id(IMAGE_TOKENS["image_token"]))
    cfg.to_json_file(str(folder / "config.json"))
    seq = (ARCH.image_size // 16) ** 2 // 16
    write_json(folder / "processor_config.json", {"processor_class": "SmolVLMProcessor", "image_seq_len": seq})
    write_json(folder / "preprocessor_config.json", {
        "image_processor_type": "SmolVLMImageProcessor", "processor_class": "SmolVLMProcessor", "do_resize": True,
        "size": {"longest_edge": ARCH.image_size}, "max_image_size": {"longest_edge": ARCH.image_size},
        "do_image_splitting": False, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 1, "do_pad": True,
        "do_convert_rgb": True})
    return cfg


def lerobot_config(stats: dict[str, Any], a: Arch = ARCH) -> dict[str, Any]:
    feats: dict[str, Any] = {f"observation.images.{c}": {"type": "VISUAL", "shape": [3, 480, 640]} for c in CAMERAS}
    feats["observation.state"] = {"type": "STATE", "shape": [len(stats["state"]["mean"])]}
    return {"type": "smolvla", "n_obs_steps": 1, "chunk_size": a.chunk_size, "n_action_steps": a.chunk_size,
            "input_features": feats, "output_features": {"action": {"type": "ACTION",
                                                                    "shape": [len(stats["actions"]["mean"])]}},
            "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
            "max_state_dim": a.max_state_dim, "max_action_dim": a.max_action_dim,
            "resize_imgs_with_padding": [a.image_size, a.image_size], "empty_cameras": 0,
            "adapt_to_pi_aloha": False, "use_delta_joint_actions_aloha": False,
            "tokenizer_max_length": a.tokenizer_max_length, "num_steps": a.num_steps, "use_cache": True,
            "vlm_model_name": HUB_VLM, "load_vlm_weights": False, "add_image_special_tokens": False,
            "attention_mode": "cross_attn" if a.cross_attention else "self_attn", "prefix_length": -1,
            "pad_language_to": "longest",
            "num_expert_layers": a.num_expert_layers, "num_vlm_layers": a.num_vlm_layers,
            "self_attn_every_n_layers": a.self_attn_every_n_layers,
            "expert_width_multiplier": a.expert_width_multiplier, "min_period": a.min_period,
            "max_period": a.max_period}


def build_smolvla_tiny(out_dir: Path, *, cross_attention: bool = True) -> Path:
    """The preset; `cross_attention=False` writes the same sizes in `attention_mode: self_attn` (every layer
    self-attention; not a preset: the golden fixture of that mode builds it)."""
    arch = dataclasses.replace(ARCH, cross_attention=cross_attention)
    cfg = _write_vlm_folder(out_dir / VLM_DIR)
    torch.manual_seed(SEED)
    model = SmolVLAModel(cfg, arch)
    spread_init(model, SEED)
    save_sharded({"model." + k: v for k, v in model.state_dict().items()}, out_dir)
    stats = PI0_NORM_STATS["norm_stats"]
    write_json(out_dir / "config.json", lerobot_config(stats, arch))
    _write_processors(out_dir, {"norm_stats": stats}, newline_step="smolvla_new_line_processor", padding="longest")
    return out_dir
