"""Load a tokenizer once per process: the embedded default, a tokenizer.json, or a local
Hugging Face model folder.

`load_tokenizer("embedded")` is the byte-level BPE shipped in `zaya_data/assets/tokenizer`
(see `scripts/train_tokenizer.py`). A folder is read the way Hugging Face lays it out:
`tokenizer.json` for the model, and the bos/eos/pad tokens from `tokenizer_config.json`,
then `special_tokens_map.json`, then `config.json` (`*_token_id`), first found wins.

The loaded tokenizer never adds special tokens by itself (no post-processor, no
truncation, no padding): the template decides where bos and eos go.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, pre_tokenizers

EMBEDDED = "embedded"
EMBEDDED_DIR = Path(__file__).resolve().parent / "assets" / "tokenizer"

# Conventional names, used only when no config file names the token (a bare tokenizer.json).
_GUESSES = {
    "bos": ("<bos>", "<s>", "<|begin_of_text|>", "<|startoftext|>"),
    "eos": ("<eos>", "</s>", "<|end_of_text|>", "<|endoftext|>"),
    "pad": ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>"),
}


class TokenizerLoadError(ValueError):
    """A tokenizer path that does not exist or does not hold a usable tokenizer."""


@dataclass(frozen=True)
class LoadedTokenizer:
    """A ready tokenizer plus what the manifest must record about it.

    `tokenizer` recognises special-token strings in its input (for template text such
    as `<|im_start|>`); `text_tokenizer` is the same model but treats them as plain text,
    so a record that happens to contain "</think>" cannot inject a control token.
    """

    tokenizer: Tokenizer
    text_tokenizer: Tokenizer
    path: str
    sha256: str
    vocab_size: int
    pad_id: int
    bos_id: int | None
    eos_id: int | None
    special: dict[str, int] = field(default_factory=dict)
    tokenizer_file: str = ""
    # For byte-level BPE: the number of UTF-8 bytes each id stands for (-1 where unknown),
    # so trimming can find the text position of a token without re-tokenizing; None for
    # other tokenizers.
    byte_lengths: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_manifest(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "pad_id": self.pad_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "special": dict(sorted(self.special.items(), key=lambda kv: kv[1])),
        }


def _token_name(value: Any) -> str | None:
    """A special token as configs write it: a string, or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerLoadError(f"tokenizer config {path}: cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise TokenizerLoadError(f"tokenizer config {path}: expected a JSON object")
    return data


def _configured_ids(folder: Path, tok: Tokenizer) -> dict[str, int | None]:
    """bos/eos/pad ids named by the folder's config files, None where none names one."""
    found: dict[str, int | None] = {"bos": None, "eos": None, "pad": None}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        p = folder / name
        if not p.is_file():
            continue
        cfg = _read_json(p)
        for role in found:
            if found[role] is not None:
                continue
            token = _token_name(cfg.get(f"{role}_token"))
            if token is None:
                continue
            tid = tok.token_to_id(token)
            if tid is None:
                raise TokenizerLoadError(
                    f"tokenizer config {p}: {role}_token {token!r} is not in {folder / 'tokenizer.json'}"
                )
            found[role] = tid
    p = folder / "config.json"
    if p.is_file():
        cfg = _read_json(p)
        for role in found:
            value = cfg.get(f"{role}_token_id")
            if isinstance(value, list):  # some models list several eos ids; the first ends text
                value = value[0] if value else None
            if found[role] is None and isinstance(value, int):
                found[role] = value
    return found


def _byte_lengths(tok: Tokenizer) -> np.ndarray | None:
    """UTF-8 byte length of every id of a byte-level BPE (its vocabulary is written in
    the 256-symbol byte alphabet, one symbol per byte); None for any other tokenizer."""
    spec = json.loads(tok.to_str())
    decoder = spec.get("decoder") or {}
    decoders = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    if spec.get("normalizer") is not None or (spec.get("model") or {}).get("type") != "BPE":
        return None
    if not any(d.get("type") == "ByteLevel" for d in decoders):
        return None
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    out = np.full(tok.get_vocab_size(with_added_tokens=True), -1, dtype=np.int64)
    for token, tid in tok.get_vocab(with_added_tokens=False).items():
        if tid < out.size and all(c in alphabet for c in token):
            out[tid] = len(token)
    for tid, added in tok.get_added_tokens_decoder().items():
        if tid < out.size:
            out[tid] = len(added.content.encode("utf-8"))
    return out


def _resolve(path: str) -> tuple[Path, Path]:
    """(tokenizer.json, folder holding its configs) for a user-given path."""
    if path == EMBEDDED:
        p = EMBEDDED_DIR
    else:
        p = Path(path).expanduser()
    if not p.exists():
        raise TokenizerLoadError(f"tokenizer {path!r}: no such file or folder ({p.resolve()})")
    if p.is_dir():
        file = p / "tokenizer.json"
        if not file.is_file():
            raise TokenizerLoadError(
                f"tokenizer folder {p.resolve()}: has no tokenizer.json "
                "(a fast-tokenizer file is needed; slow-only tokenizers are not supported)"
            )
        return file, p
    return p, p.parent


@functools.lru_cache(maxsize=8)
def _load(path: str) -> LoadedTokenizer:
    file, folder = _resolve(path)
    data = file.read_bytes()
    try:
        tok = Tokenizer.from_str(data.decode("utf-8"))
        text_tok = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise TokenizerLoadError(f"tokenizer file {file}: cannot be loaded ({e})") from None
    for t in (tok, text_tok):
        # The template places bos/eos; a model's own post-processor, truncation or
        # padding would add or drop tokens behind its back.
        t.post_processor = None
        t.no_truncation()
        t.no_padding()
    text_tok.encode_special_tokens = True

    special = {a.content: i for i, a in tok.get_added_tokens_decoder().items() if a.special}
    ids = _configured_ids(folder, tok)
    for role, names in _GUESSES.items():
        if ids[role] is None:
            ids[role] = next((special[n] for n in names if n in special), None)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    for role, tid in ids.items():
        if tid is not None and not 0 <= tid < vocab_size:
            raise TokenizerLoadError(f"tokenizer {path!r}: {role} id {tid} is outside the vocabulary ({vocab_size})")
    # Padding carries loss 0 and is cut off by segment lengths, so any id works when the
    # tokenizer has no pad token; eos is the conventional stand-in.
    pad = ids["pad"] if ids["pad"] is not None else ids["eos"] if ids["eos"] is not None else 0
    return LoadedTokenizer(
        tokenizer=tok,
        text_tokenizer=text_tok,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        vocab_size=vocab_size,
        pad_id=pad,
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        special=special,
        tokenizer_file=str(file.resolve()),
        byte_lengths=_byte_lengths(tok),
    )


def load_tokenizer(path: str) -> LoadedTokenizer:
    """The tokenizer at `path` ("embedded", a tokenizer.json, or an HF model folder),
    loaded once per process and shared by every stage in it. Treat it as read-only."""
    return _load(str(path))
