"""The embedded tokenizer and `load_tokenizer`: fixed ids, exact round trips on real
text, HF-folder loading, and errors that name the path."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from zaya_data.tokenizer import EMBEDDED_DIR, TokenizerLoadError, load_tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("embedded")


def test_embedded_tokenizer_has_fixed_special_ids_and_32768_entries(tok):
    assert tok.vocab_size == 32768
    assert tok.special == {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, "<|im_start|>": 4,
                           "<|im_end|>": 5, "<think>": 6, "</think>": 7}
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 2, 3)


def test_embedded_tokenizer_hash_is_the_one_the_training_script_records(tok):
    doc = (REPO / "scripts" / "train_tokenizer.py").read_text()
    recorded = re.search(r"tokenizer\.json sha256: ([0-9a-f]{64})", doc).group(1)
    assert tok.sha256 == recorded
    m = tok.to_manifest()
    assert m == {"path": "embedded", "sha256": recorded, "vocab_size": 32768, "pad_id": 0, "bos_id": 2,
                 "eos_id": 3, "special": tok.special}


def test_loading_twice_in_one_process_returns_the_cached_tokenizer(tok):
    assert load_tokenizer("embedded") is tok


def _shared_files() -> list[Path]:
    return sorted(p for p in DATA.rglob("*") if p.is_file())


@pytest.mark.parametrize("path", _shared_files(), ids=lambda p: str(p.relative_to(DATA)))
def test_embedded_tokenizer_round_trips_every_shared_data_file(tok, path):
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    encs = tok.text_tokenizer.encode_batch_fast(lines, add_special_tokens=False)
    decoded = tok.text_tokenizer.decode_batch([e.ids for e in encs], skip_special_tokens=False)
    assert decoded == lines
    assert all(1 not in e.ids for e in encs)  # byte-level: never <unk>


def test_any_bytes_round_trip_without_unknowns(tok):
    text = "Größe ≤ 5 — 東京 🚀 \x00\x7f\t\r\n Ω≈ç√ ﷺ \U0010fffd"
    ids = tok.text_tokenizer.encode(text, add_special_tokens=False).ids
    assert 1 not in ids
    assert tok.text_tokenizer.decode(ids, skip_special_tokens=False) == text


def test_special_token_strings_in_record_text_stay_plain_text(tok):
    text = "a </think> b <|im_end|>"
    plain = tok.text_tokenizer.encode(text, add_special_tokens=False).ids
    assert not set(plain) & set(range(8))
    assert tok.text_tokenizer.decode(plain) == text
    templ = tok.tokenizer.encode(text, add_special_tokens=False).ids
    assert 7 in templ and 5 in templ


def test_a_models_post_processor_and_truncation_are_switched_off(tok, tmp_path):
    spec = json.loads((EMBEDDED_DIR / "tokenizer.json").read_text())
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}},
    }
    spec["truncation"] = {"direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    other = load_tokenizer(str(tmp_path / "tokenizer.json"))
    text = "hello world, this is longer than three tokens"
    assert other.tokenizer.encode(text).ids == tok.tokenizer.encode(text, add_special_tokens=False).ids
    assert len(other.tokenizer.encode(text).ids) > 3 and 2 not in other.tokenizer.encode(text).ids


def test_hf_layout_folder_gives_the_same_ids_as_embedded(tok, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(EMBEDDED_DIR, folder)
    other = load_tokenizer(str(folder))
    text = (DATA / "limo-eval" / "math.jsonl").read_text()[:20000]
    assert other.tokenizer.encode(text).ids == tok.tokenizer.encode(text).ids
    assert (other.sha256, other.bos_id, other.eos_id, other.pad_id) == (tok.sha256, 2, 3, 0)
    assert other.path == str(folder)


def test_bare_tokenizer_file_and_config_json_ids(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(EMBEDDED_DIR / "tokenizer.json", folder / "tokenizer.json")
    # No tokenizer_config.json: config.json's ids are used (eos as a list, first wins).
    (folder / "config.json").write_text(json.dumps({"bos_token_id": 4, "eos_token_id": [5, 3], "pad_token_id": None}))
    got = load_tokenizer(str(folder))
    assert (got.bos_id, got.eos_id, got.pad_id) == (4, 5, 0)  # pad guessed from "<pad>"
    bare = tmp_path / "only" / "tokenizer.json"
    bare.parent.mkdir()
    shutil.copy(EMBEDDED_DIR / "tokenizer.json", bare)
    got = load_tokenizer(str(bare))
    assert (got.bos_id, got.eos_id, got.pad_id) == (2, 3, 0)  # conventional names


def test_tokenizer_config_naming_a_token_dict_is_read(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(EMBEDDED_DIR, folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["eos_token"] = {"content": "<|im_end|>", "special": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert load_tokenizer(str(folder)).eos_id == 5


def test_missing_path_error_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(TokenizerLoadError, match=re.escape(str(missing))):
        load_tokenizer(str(missing))


def test_folder_without_tokenizer_json_error_names_it(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TokenizerLoadError, match=re.escape(str(tmp_path)) + ".*has no tokenizer.json"):
        load_tokenizer(str(tmp_path))


def test_config_naming_an_unknown_token_error_names_the_file(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(EMBEDDED_DIR, folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    with pytest.raises(TokenizerLoadError, match=re.escape(str(folder / "tokenizer_config.json")) + ".*'<s>'"):
        load_tokenizer(str(folder))


def test_malformed_tokenizer_json_error_names_the_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerLoadError, match=re.escape(str(bad))):
        load_tokenizer(str(bad))


def test_byte_lengths_locate_every_token_in_the_utf8_text(tok):
    text = (DATA / "limo-eval" / "aime.jsonl").read_text()[:30000] + " 東京 🚀 Größe"
    enc = tok.text_tokenizer.encode(text, add_special_tokens=False)
    lens = tok.byte_lengths[enc.ids]
    data = text.encode()
    assert int(lens.sum()) == len(data)
    ends = lens.cumsum()
    checked = 0
    for j in list(range(0, len(enc.ids) - 1, 97)) + list(range(len(enc.ids) - 30, len(enc.ids) - 1)):
        end = int(ends[j])
        if data[end] & 0xC0 == 0x80:  # token j ends inside a multi-byte character
            continue
        assert tok.text_tokenizer.decode(enc.ids[: j + 1]).encode() == data[:end]
        checked += 1
    assert checked > 80
    assert (tok.byte_lengths[:8] == [len(s.encode()) for s in tok.special]).all()
