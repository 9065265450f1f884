"""Train the embedded default tokenizer: a byte-level BPE with 32768 entries.

It ships inside the package (`zaya_data/assets/tokenizer/`) so that a fresh install can
build the demo mixtures with no download. The training text is real and available
offline on every machine that has the project's dependencies:

- the Python standard library's own `.py` sources (code), in sorted path order, with
  `site-packages` left out (what is installed there differs between machines), capped
  at `--max-code-bytes`;
- `pydoc_data.topics` (the Python documentation, English prose), in sorted key order;
- `reasoning-gym`'s `gsm_symbolic` problems with their worked answers
  (`metadata.answer_cot`), generated from a fixed seed (math word problems in English).

Byte-level means every string of any language or any bytes encodes with no unknown
token, and decoding gives the string back exactly. Special tokens get fixed ids, listed
first so that the trainer assigns them 0..7 (pad 0 and bos 2 mirror ZAYA1's ids):
`<pad>`=0, `<unk>`=1, `<bos>`=2, `<eos>`=3, `<|im_start|>`=4, `<|im_end|>`=5,
`<think>`=6, `</think>`=7.

Deterministic: file order, seeds and trainer settings are fixed, and the BPE trainer
breaks ties between equally frequent pairs by the pair itself.

The committed files were made with (Python 3.11.7, tokenizers 0.23.3,
reasoning-gym 0.1.19):

    python scripts/train_tokenizer.py --out zaya_data/assets/tokenizer

tokenizer.json sha256: ef97dfe940ee07dcfd7ae6faf4c6c273b06a2da3c917a346b8a111e66465ad46
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 32768
SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
GSM_SEED = 20240501
GSM_SIZE = 20000


def stdlib_files(max_bytes: int) -> list[Path]:
    """The standard library's `.py` files in sorted order, up to `max_bytes` in total."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts
    )
    chosen: list[Path] = []
    total = 0
    for p in files:
        size = p.stat().st_size
        if total + size > max_bytes:
            break
        chosen.append(p)
        total += size
    return chosen


def corpus(max_code_bytes: int) -> Iterator[str]:
    for p in stdlib_files(max_code_bytes):
        # A few stdlib test files are deliberately not UTF-8; replacement keeps the rest.
        yield p.read_bytes().decode("utf-8", errors="replace")
    from pydoc_data import topics

    for key in sorted(topics.topics):
        yield topics.topics[key]
    import reasoning_gym

    for item in reasoning_gym.create_dataset("gsm_symbolic", size=GSM_SIZE, seed=GSM_SEED):
        yield item["question"] + "\n\n" + item["metadata"]["answer_cot"]


def train(max_code_bytes: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    # No prefix space and the GPT-2 regex: the split is reversible, so decode(encode(x))
    # returns x exactly.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        # All 256 byte symbols are in the vocabulary whether or not the corpus uses them.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(max_code_bytes), trainer=trainer)
    return tok


def hf_configs() -> tuple[dict, dict]:
    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    special_map = {
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "additional_special_tokens": SPECIAL_TOKENS[4:],
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 131072,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        **special_map,
    }
    return config, special_map


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="zaya_data/assets/tokenizer")
    ap.add_argument("--max-code-bytes", type=int, default=60_000_000)
    args = ap.parse_args()
    tok = train(args.max_code_bytes)
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise SystemExit(f"trained vocabulary has {tok.get_vocab_size()} entries, expected {VOCAB_SIZE}")
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise SystemExit(f"special token {t!r} got id {tok.token_to_id(t)}, expected {i}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = tok.to_str(pretty=False).encode()
    (out / "tokenizer.json").write_bytes(data)
    config, special_map = hf_configs()
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    print(f"{out / 'tokenizer.json'}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
