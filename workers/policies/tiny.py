"""Tiny presets: the real architectures at toy sizes, random weights from a fixed seed, real tokenizers,
written to disk in the real checkpoint formats so they load through the same code as real weights."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from workers.policies.checkpoint import save_sharded, write_json
from workers.policies.tiny_tokenizer import save_tokenizer, train_bpe

log = logging.getLogger(__name__)
SEED = 1234
OPENVLA_BASE_VOCAB = 512  # V: ids 256..511 are the action ids, <PAD> = 512, 64 padding rows above
PI0_BASE_VOCAB = 512  # <image> = 512 = text vocab_size, the same layout as PaliGemma's 257152


def spread_init(model: torch.nn.Module, seed: int) -> None:
    """Re-draw weights at unit gain (1/sqrt(fan_in)), LayerScale at 1, norms near 1.

    Default inits (std 0.02, timm's LayerScale 1e-5) make a toy-sized random network nearly constant:
    every image and prompt would decode to the same action and the batching/image tests would prove
    nothing. At unit gain the outputs depend on every input.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = 1 if ("embed" in name or "token" in name) else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(max(1, fan_in)))
            elif name.endswith(("gamma", "scale_factor")):
                p.fill_(1.0)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _action_stats(q01: list[float], q99: list[float], n: int) -> dict[str, Any]:
    mean = [(a + b) / 2 for a, b in zip(q01, q99, strict=True)]
    std = [(b - a) / 4 for a, b in zip(q01, q99, strict=True)]
    return {"action": {"mean": mean, "std": std, "min": [a * 1.5 for a in q01], "max": [b * 1.5 for b in q99],
                       "q01": q01, "q99": q99, "mask": [True] * 6 + [False]},
            "proprio": {k: [0.0] * 7 for k in ("mean", "std", "min", "max", "q01", "q99")},
            "num_transitions": n, "num_trajectories": n // 40}


# Ranges of the same order as the real BridgeData V2 (WidowX) and fractal (Google robot) statistics.
OPENVLA_NORM_STATS = {
    "bridge_orig": _action_stats([-0.029, -0.042, -0.026, -0.081, -0.092, -0.207, 0.0],
                                 [0.029, 0.040, 0.040, 0.082, 0.078, 0.204, 1.0], 2135463),
    "fractal20220817_data": _action_stats([-0.224, -0.149, -0.232, -0.350, -0.419, -0.436, 0.0],
                                          [0.178, 0.147, 0.219, 0.390, 0.339, 0.450, 1.0], 3786400),
}


def openvla_tiny_config() -> dict[str, Any]:
    vocab = OPENVLA_BASE_VOCAB + 64
    text_config = {  # written the way transformers 4.40 wrote LlamaConfig (rope_theta, rope_scaling)
        "model_type": "llama", "vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "hidden_act": "silu",
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None,
        "attention_bias": False, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": OPENVLA_BASE_VOCAB, "torch_dtype": "float32", "transformers_version": "4.40.1",
    }
    return {
        "model_type": "openvla", "architectures": ["OpenVLAForActionPrediction"],
        "vision_backbone_id": "dinosiglip-vit-so-224px", "llm_backbone_id": "llama2-tiny-pure",
        "arch_specifier": "no-align+fused-gelu-mlp", "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive", "image_sizes": [224, 224],
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None],
        "timm_model_kwargs": [{"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0},
                              {"embed_dim": 48, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0}],
        "hf_llm_id": "tiny", "llm_max_length": 2048, "pad_token_id": OPENVLA_BASE_VOCAB, "pad_to_multiple_of": 64,
        "output_projector_states": False, "n_action_bins": 256, "norm_stats": OPENVLA_NORM_STATS,
        "default_unnorm_key": "bridge_orig", "text_config": text_config, "torch_dtype": "float32",
    }


def build_openvla_tiny(out_dir: Path) -> Path:
    from workers.policies.openvla.config import OpenVLAConfig
    from workers.policies.openvla.model import OpenVLAModel, module_to_checkpoint_name

    cfg_dict = openvla_tiny_config()
    torch.manual_seed(SEED)
    model = OpenVLAModel(OpenVLAConfig.from_dict(cfg_dict), full=True)  # full: the real key set, unused keys too
    spread_init(model, SEED)
    state = {module_to_checkpoint_name(k): v for k, v in model.state_dict().items()}
    save_sharded(state, out_dir, max_shard_bytes=600_000)  # several shards + index, like the 7B's three
    write_json(out_dir / "config.json", cfg_dict)
    write_json(out_dir / "dataset_statistics.json", OPENVLA_NORM_STATS)
    tok = train_bpe(OPENVLA_BASE_VOCAB, ["<unk>", "<s>", "</s>"], seed=SEED)
    save_tokenizer(tok, out_dir, bos="<s>", eos="</s>", unk="<unk>", pad="<PAD>", extra_special=[],
                   add_bos=True, max_length=2048)
    return out_dir


def pi0_tiny_config() -> dict[str, Any]:
    gemma = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 2,
             "num_key_value_heads": 1, "head_dim": 32}
    return {
        "vlm_config": {
            "text_config": {"model_type": "gemma", **gemma, "vocab_size": PI0_BASE_VOCAB},
            "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                              "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 14,
                              "image_size": 224, "vision_use_head": False},
            "projection_dim": 64, "image_token_id": PI0_BASE_VOCAB,
        },
        "dit_config": {**gemma, "vocab_size": PI0_BASE_VOCAB},  # 5.24 ties it anyway; 5.18 would use 256000
        "chunk_size": 50, "max_state_dim": 32, "max_action_dim": 32, "num_inference_steps": 10,
    }


PI0_NORM_STATS = {
    "norm_stats": {
        "state": {"mean": [0.1, -0.2, 0.3, 0.0, 0.5, -0.1, 0.4, 0.05], "std": [0.3, 0.2, 0.4, 0.1, 0.6, 0.3, 0.2, 0.5]},
        "actions": {"mean": [0.001, -0.002, 0.0005, 0.0, 0.003, -0.001, 0.6],
                    "std": [0.01, 0.012, 0.009, 0.03, 0.025, 0.04, 0.45]},
    },
    "cameras": ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"],
    "action_type": "ee_delta",
    "units": ["m", "m", "m", "rad", "rad", "rad", "gripper_open_fraction"],
}


def build_pi0_tiny(out_dir: Path) -> Path:
    from transformers import PI0Config, PI0ForConditionalGeneration

    cfg = PI0Config(**pi0_tiny_config())
    torch.manual_seed(SEED)
    model = PI0ForConditionalGeneration(cfg)
    spread_init(model, SEED)
    save_sharded(model.state_dict(), out_dir)  # a single model.safetensors, as save_pretrained writes it
    cfg.to_json_file(str(out_dir / "config.json"))
    write_json(out_dir / "norm_stats.json", PI0_NORM_STATS)
    save_pi0_tokenizer(out_dir)
    return out_dir


def save_pi0_tokenizer(out_dir: Path) -> None:
    """The tiny PaliGemma-style tokenizer (<image> = the text vocabulary's size) of pi0-tiny and pi05-tiny."""
    tok = train_bpe(PI0_BASE_VOCAB, ["<pad>", "<eos>", "<bos>", "<unk>"], seed=SEED)
    save_tokenizer(tok, out_dir, bos="<bos>", eos="<eos>", unk="<unk>", pad="<pad>", extra_special=["<image>"],
                   add_bos=False, max_length=2048)
