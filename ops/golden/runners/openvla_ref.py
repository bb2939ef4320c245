"""Runs INSIDE the openvla reference env (transformers 4.40.1, timm 0.9.10, tokenizers 0.19.1).

Imports upstream's published remote code (the three *_prismatic.py files, written next to this run by
the builder) and nothing of the project. Usage: python openvla_ref.py SRC_DIR MODEL_DIR INPUTS.npz OUT.npz

Adaptations to upstream, all needed only because the checkpoint is tiny (each is recorded in the output):
  1. the tiny `llm_backbone_id` is registered in PrismaticConfig's backbone tables (upstream rejects ids
     outside them); it maps to the same "llama" metaclass as llama2-7b-pure;
  2. `timm.create_model` receives the checkpoint's `timm_model_kwargs` (tower sizes) for each real timm id;
  3. tokenizer.json is rewritten in tokenizers-0.19's format (merges as "a b" strings, no ignore_merges):
     the same tokenizer, which 0.19 cannot read as written by the 0.2x that built it; and its
     model_input_names are Llama's (no token_type_ids, which generate() would reject);
  4. the literal 29871 (Llama-2's bare word-boundary piece) in predict_action is replaced by the tiny
     tokenizer's id of the same piece.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList

SPACE_PIECE = "\u2581"


def load_upstream(src: Path, work: Path, space_id: int):
    pkg = work / "prismatic_hf"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for name in ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py"):
        text = (src / name).read_text()
        if name == "modeling_prismatic.py":
            assert text.count("29871") == 2, "upstream predict_action changed; re-check adaptation 3"
            text = text.replace("29871", str(space_id))
        (pkg / name).write_text(text)
    sys.path.insert(0, str(work))
    return (importlib.import_module(f"prismatic_hf.{m}") for m in
            ("configuration_prismatic", "modeling_prismatic", "processing_prismatic"))


def patch_for_tiny(cfg_mod, raw: dict) -> None:
    llm_id = raw["llm_backbone_id"]
    cfg_mod.LLM_BACKBONE_TO_HF_PATH[llm_id] = raw["hf_llm_id"]
    cfg_mod.LLM_BACKBONE_TO_HF_METACLASS[llm_id] = "llama"
    cfg_mod.VALID_LLM_BACKBONES.add(llm_id)
    sizes = dict(zip(raw["timm_model_ids"], raw.get("timm_model_kwargs", [{}, {}]), strict=True))
    real = timm.create_model

    def create_model(model_id, *args, **kwargs):
        return real(model_id, *args, **{**kwargs, **sizes.get(model_id, {})})

    timm.create_model = create_model


class RestrictTo(LogitsProcessor):
    """Greedy over the action ids only (the project's documented choice); upstream is run both ways."""

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def __call__(self, input_ids, scores):
        masked = torch.full_like(scores, float("-inf"))
        masked[:, self.lo:self.hi] = scores[:, self.lo:self.hi]
        return masked


def capture_generate(vla, store: dict):
    """Keep upstream's predict_action intact; record the ids and the raw per-step logits generate saw."""
    real = vla.generate

    def generate(input_ids, **kwargs):
        out = real(input_ids, return_dict_in_generate=True, output_logits=True, **kwargs)
        store["prompt_ids"] = input_ids[0].cpu().numpy()
        store["logits"] = torch.stack(out.logits, dim=1)[0].float().cpu().numpy()
        store["tokens"] = out.sequences[0, input_ids.shape[1]:].cpu().numpy()
        return out.sequences

    vla.generate = generate


def old_format_tokenizer(model_dir: Path, work: Path) -> Path:
    """Adaptation 3: a copy of the tokenizer files that tokenizers 0.19 can parse."""
    out = work / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads((model_dir / "tokenizer.json").read_text())
    data["model"].pop("ignore_merges", None)
    data["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    (out / "tokenizer.json").write_text(json.dumps(data))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (out / name).write_text((model_dir / name).read_text())
    return out


def build(src: Path, model_dir: Path, work: Path):
    raw = json.loads((model_dir / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(old_format_tokenizer(model_dir, work)))
    tok.model_input_names = ["input_ids", "attention_mask"]  # LlamaTokenizerFast's
    space_id = tok.convert_tokens_to_ids(SPACE_PIECE)
    cfg_mod, model_mod, proc_mod = load_upstream(src, work, space_id)
    patch_for_tiny(cfg_mod, raw)
    config = cfg_mod.OpenVLAConfig.from_pretrained(str(model_dir))
    vla, info = model_mod.OpenVLAForActionPrediction.from_pretrained(
        str(model_dir), config=config, torch_dtype=torch.float32, attn_implementation="eager",
        output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"upstream did not load every tensor exactly: {bad}"
    towers = [vla.vision_backbone.featurizer, vla.vision_backbone.fused_featurizer]
    data = [timm.data.resolve_model_data_config(t) for t in towers]  # as the converter does
    image_proc = proc_mod.PrismaticImageProcessor(
        use_fused_vision_backbone=True, image_resize_strategy=config.image_resize_strategy,
        input_sizes=[(3, s, s) for s in config.image_sizes], interpolations=[d["interpolation"] for d in data],
        means=[d["mean"] for d in data], stds=[d["std"] for d in data])
    processor = proc_mod.PrismaticProcessor(image_processor=image_proc, tokenizer=tok)
    return vla.eval(), processor, data, space_id


@torch.inference_mode()
def run_item(vla, processor, image: np.ndarray, instruction: str, key: str, restrict) -> dict:
    prompt = f"In: What action should the robot take to {instruction.lower()}?\nOut:"
    inputs = processor(prompt, Image.fromarray(image))
    store: dict = {}
    capture_generate(vla, store)
    kwargs = {"logits_processor": LogitsProcessorList([restrict])} if restrict else {}
    actions = vla.predict_action(**inputs, unnorm_key=key, do_sample=False, **kwargs)
    del vla.generate
    store["pixels"] = inputs["pixel_values"][0].numpy()
    store["patches"] = vla.projector(vla.vision_backbone(inputs["pixel_values"]))[0].numpy()
    store["actions"] = np.asarray(actions, dtype=np.float64)
    return store


def stack(values: list) -> np.ndarray:
    """Stack per-item arrays; ragged 1-D integer ones (prompt ids) are right-padded with -1."""
    if len({v.shape for v in values}) == 1:
        return np.stack(values)
    width = max(len(v) for v in values)
    return np.stack([np.pad(v, (0, width - len(v)), constant_values=-1) for v in values])


def main(src: str, model_dir: str, inputs_path: str, out_path: str) -> None:
    torch.manual_seed(0)
    vla, processor, data, space_id = build(Path(src), Path(model_dir), Path(out_path).parent / "upstream-code")
    inp = np.load(inputs_path)
    v = vla.vocab_size
    restrict = RestrictTo(v - vla.config.n_action_bins, v)
    out: dict[str, list] = {}
    for i, instruction in enumerate(inp["instructions"]):
        image, key = inp[f"image_{inp['image_index'][i]}"], str(inp["unnorm_keys"][i])
        for tag, proc in (("", restrict), ("free_", None)):
            for k, val in run_item(vla, processor, image, str(instruction), key, proc).items():
                out.setdefault(tag + k, []).append(val)
    keep = [k for k in out if not k.startswith("free_") or k in ("free_tokens", "free_actions", "free_logits")]
    arrays = {k: stack(out[k]) for k in keep}
    import tokenizers
    import transformers
    arrays["versions"] = np.array(json.dumps({"transformers": transformers.__version__, "timm": timm.__version__,
                                              "tokenizers": tokenizers.__version__, "torch": torch.__version__}))
    arrays["pixel_mean"] = np.array([d["mean"] for d in data])
    arrays["pixel_std"] = np.array([d["std"] for d in data])
    arrays["space_id"] = np.array(space_id)
    np.savez(out_path, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:5])
