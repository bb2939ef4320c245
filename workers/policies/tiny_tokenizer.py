"""Real (if small) tokenizers for the tiny presets, trained locally with `tokenizers`.

Llama-2 style: SentencePiece-like BPE over "\u2581"-marked words, so the bare word-boundary piece exists
(the analogue of Llama-2's 29871) and the base vocabulary has an exact size V whose top 256 ids
double as OpenVLA's action ids, just as in Llama-2's 32000.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

_WORDS = (
    "pick place put move push pull open close lift drop grab grasp stack unstack wipe fold unfold pour turn "
    "rotate slide insert remove take bring knock flip press the a an of to on in into onto from with near "
    "left right top bottom middle front back side inside outside above below red green blue yellow orange "
    "purple black white pink brown gray silver small large tall short round square block cube cup mug bowl "
    "plate spoon fork knife pot pan lid towel cloth sponge can bottle jar box drawer cabinet door microwave "
    "oven sink faucet table counter shelf basket tray carrot eggplant banana apple corn pepper lemon potato "
    "tomato grape marker pen book toy duck robot gripper arm object item thing piece one two three it them "
    "what action should take out robot task then and slowly carefully gently quickly towards away under over "
    "between beside behind upright down up edge corner center stove burner knob handle button switch light"
).split()


def _corpus(seed: int, n: int = 4000) -> list[str]:
    rng = random.Random(seed)
    lines = [f"In: What action should the robot take to {w}?\nOut:" for w in _WORDS]
    for _ in range(n):
        lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))))
    return lines


def train_bpe(base_vocab: int, specials: list[str], seed: int = 0) -> Tokenizer:
    """A BPE with exactly `base_vocab` ids (specials first), Metaspace word boundaries, byte-free alphabet."""
    tok = Tokenizer(models.BPE(unk_token=specials[0] if "unk" in specials[0] else "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    alphabet = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:?.,!'-\n\u2581 "))
    trainer = trainers.BpeTrainer(vocab_size=base_vocab, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False, min_frequency=1)
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    if tok.get_vocab_size() != base_vocab:
        raise RuntimeError(f"tiny tokenizer reached {tok.get_vocab_size()} ids, wanted {base_vocab}")
    return tok


def save_tokenizer(tok: Tokenizer, out_dir: Path, *, bos: str, eos: str, unk: str, pad: str,
                   extra_special: list[str], add_bos: bool, max_length: int) -> None:
    """Add the post-V special tokens, set BOS templating and write the HF files (tokenizer.json + configs)."""
    tok.add_special_tokens([pad, *extra_special])
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    special = {"bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": pad}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
              "add_bos_token": add_bos, "add_eos_token": False, "clean_up_tokenization_spaces": False, **special}
    if extra_special:
        config["additional_special_tokens"] = extra_special
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
