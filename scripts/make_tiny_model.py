#!/usr/bin/env python
"""Build the tiny packaged ZAYA1 checkpoint folder from its seed and print where it is.

    python scripts/make_tiny_model.py                 # into the cache ($ZAYA_MODEL_CACHE or ~/.cache/zaya-data/models)
    python scripts/make_tiny_model.py --out some/dir  # a plain copy of the folder elsewhere
    python scripts/make_tiny_model.py --prompt "What is 2+2?"   # and generate a few tokens with it

The same seed gives byte-identical weights on every machine; `model.tiny.load_tiny()` builds the
same folder on first use, so running this script is never required, only convenient.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.generate import SamplingParams, generate  # noqa: E402
from model.loading import load_pretrained  # noqa: E402
from model.tiny import TINY_SEED, tiny_folder  # noqa: E402
from model.zaya1 import parameter_counts  # noqa: E402
from zaya_data.io import sha256_file  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=TINY_SEED)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="copy the checkpoint folder here")
    parser.add_argument("--prompt", default=None, help="a user message to complete greedily")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()

    folder = tiny_folder(args.seed, args.cache_dir)
    if args.out is not None:
        shutil.copytree(folder, args.out, dirs_exist_ok=True)
        folder = args.out
    model, tokenizer = load_pretrained(folder)
    counts = parameter_counts(model.config)
    print(f"folder: {folder}")
    print(f"parameters: {counts['total']:,} total, {counts['non_embedding']:,} without embeddings")
    print(f"model.safetensors sha256: {sha256_file(folder / 'model.safetensors')}")
    if args.prompt is not None:
        if tokenizer is None:
            print("no tokenizer.json in the folder; cannot encode a prompt", file=sys.stderr)
            return 1
        text = f"<|im_start|>user\n{args.prompt}<|im_end|>\n<|im_start|>assistant\n"
        prompt = [model.config.bos_token_id] + tokenizer.encode(text).ids
        out = generate(model, [prompt], SamplingParams(max_new_tokens=args.max_new_tokens), decode=tokenizer.decode)[0]
        print(f"completion ({out.completion_tokens} tokens, finish={out.finish_reason}): {out.text!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
