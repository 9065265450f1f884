"""Format + tokenize + trim: DOCUMENT or REASONING rows -> TOKENIZED rows.

    FormatTokenizeTrim(tokenizer, template, context, loss, trim_window, source_kind)(table, ledger)

The template (see `zaya_data.stages.template`) is compiled once into *slots*: constant
token runs (template text, bos, eos), encoded once when the stage is built, and record
fields (prompt, reasoning, answer, text). Each field column of a batch is tokenized with
one `encode_batch_fast` call; template text is never re-tokenized per record, and token
boundaries never cross between template text and record text. The output is then one
vectorised gather: every (record, slot) names a range of one flat source array, and the
ranges are copied into the flat `input_ids` values in one numpy indexing operation; the
Arrow list columns are built from those values and their offsets.

Reasoning samples longer than `context` are trimmed (see `zaya_data.stages.trim`); those
whose prompt, template and answer alone exceed it are rejected into the ledger at stage
"trim", reason "prompt_and_answer_exceed_context". Plain documents longer than `context`
are split into consecutive `context`-token pieces (bos on the first, eos on the last, no
token dropped or repeated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from zaya_data.ledger import Ledger
from zaya_data.schema import TOKENIZED
from zaya_data.specs import TemplateSpec
from zaya_data.stages.template import Piece, loss_value, validate_template
from zaya_data.stages.trim import choose_cut, choose_cut_bytes, plan_trim
from zaya_data.tokenizer import load_tokenizer

SOURCE_KINDS = ("reasoning", "document")
# A template field -> the input column it reads.
_FIELD_COLUMN = {"prompt": "prompt", "answer": "answer", "text": "text", "reasoning": "reasoning"}


@dataclass(frozen=True)
class _Slot:
    role: str
    column: str | None  # the record column, or None for constant tokens
    ids: np.ndarray  # constant tokens (empty for a column slot)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n): the gather index of many ranges."""
    total = int(lengths.sum())
    out_starts = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) + np.repeat(starts - out_starts, lengths)


def _flatten(encodings: list) -> tuple[np.ndarray, np.ndarray]:
    """(all ids concatenated as int32, number of ids per encoding)."""
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    flat = np.empty(int(lengths.sum()), dtype=np.int32)
    pos = 0
    for e, n in zip(encodings, lengths.tolist()):
        flat[pos:pos + n] = e.ids
        pos += n
    return flat, lengths


def _location(table: pa.Table, i: int) -> str:
    return f"file_index {table['file_index'][i].as_py()}, row_index {table['row_index'][i].as_py()}"


class FormatTokenizeTrim:
    """The format -> tokenize -> trim stage for one source kind and one phase."""

    def __init__(self, tokenizer: str, template: TemplateSpec, context: int, loss: str,
                 trim_window: int = 64, source_kind: str = "reasoning"):
        if source_kind not in SOURCE_KINDS:
            raise ValueError(f"FormatTokenizeTrim: source kind {source_kind!r} cannot be tokenized "
                             f"(expected one of {', '.join(SOURCE_KINDS)})")
        if context < 1:
            raise ValueError(f"FormatTokenizeTrim: context must be >= 1, got {context}")
        if trim_window < 0:
            raise ValueError(f"FormatTokenizeTrim: trim_window must be >= 0, got {trim_window}")
        loss_value(loss, "user")  # validates the policy name
        self.tok = load_tokenizer(tokenizer)
        self.template = template
        self.context = context
        self.loss = loss
        self.trim_window = trim_window
        self.kind = source_kind
        pieces = validate_template(template)
        slots: list[_Slot] = []
        if template.add_bos and self.tok.bos_id is not None:
            slots.append(self._const("bos", [self.tok.bos_id]))
        if source_kind == "reasoning":
            self._add_piece(slots, pieces["user"], "user")
            self._add_piece(slots, pieces["think_open"], "think_open")
            slots.append(_Slot("reasoning", "reasoning", np.empty(0, np.int32)))
            self._add_piece(slots, pieces["think_close"], "think_close")
            self._add_piece(slots, pieces["answer"], "answer")
        else:
            self._add_piece(slots, pieces["document"], "document")
        if template.add_eos and self.tok.eos_id is not None:
            slots.append(self._const("eos", [self.tok.eos_id]))
        self.slots = slots
        self.columns = sorted({s.column for s in slots if s.column is not None})
        self.slot_loss = np.array([loss_value(loss, s.role) for s in slots], dtype=np.int64)
        self.reasoning_slot = next((j for j, s in enumerate(slots) if s.role == "reasoning"), None)

    @staticmethod
    def _const(role: str, ids: list[int]) -> _Slot:
        return _Slot(role, None, np.asarray(ids, dtype=np.int32))

    def _add_piece(self, slots: list[_Slot], piece: Piece, role: str) -> None:
        for kind, value in piece.parts:
            if kind == "field":
                slots.append(_Slot(role, _FIELD_COLUMN[value], np.empty(0, np.int32)))
            else:
                # Template text may name special tokens (<|im_start|>): use the tokenizer
                # that recognises them.
                ids = self.tok.tokenizer.encode(value, add_special_tokens=False).ids
                if ids:
                    slots.append(self._const(role, ids))

    # -- the stage -------------------------------------------------------------------

    def __call__(self, table: pa.Table, ledger: Ledger) -> pa.Table:
        n = table.num_rows
        if n == 0:
            return TOKENIZED.empty_table()
        missing = [c for c in (*self.columns, "id", "source", "category", "file_index", "row_index")
                   if c not in table.column_names]
        if missing:
            raise ValueError(f"FormatTokenizeTrim({self.kind}): input table has no column(s) {missing}; "
                             f"columns are {table.column_names}")
        ok = np.ones(n, dtype=bool)
        for col in self.columns:
            if table[col].null_count:
                nulls = np.asarray(table[col].is_null().to_numpy(zero_copy_only=False), dtype=bool)
                for i in np.nonzero(nulls & ok)[0].tolist():
                    ledger.reject("tokenize", "null_field", table["source"][i].as_py(),
                                  location=_location(table, i), record_id=table["id"][i].as_py(),
                                  detail=f"field {col!r} is null")
                ok &= ~nulls

        # Tokenize each record column once for the whole batch.
        texts: dict[str, list[str]] = {}
        flats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        text_tok = self.tok.text_tokenizer
        for col in self.columns:
            values = table[col].to_pylist()
            texts[col] = [v if v is not None else "" for v in values]
            flats[col] = _flatten(text_tok.encode_batch_fast(texts[col], add_special_tokens=False))

        # One source array holding every constant and every column's tokens; each slot of
        # each record is a (start, length) range of it.
        parts: list[np.ndarray] = []
        base = 0
        S = len(self.slots)
        starts = np.empty((n, S), dtype=np.int64)
        lengths = np.empty((n, S), dtype=np.int64)
        col_base: dict[str, int] = {}
        for col in self.columns:
            col_base[col] = base
            parts.append(flats[col][0])
            base += flats[col][0].size
        for j, slot in enumerate(self.slots):
            if slot.column is None:
                starts[:, j] = base
                lengths[:, j] = slot.ids.size
                parts.append(slot.ids)
                base += slot.ids.size
            else:
                lens = flats[slot.column][1]
                starts[:, j] = col_base[slot.column] + np.cumsum(lens) - lens
                lengths[:, j] = lens
        src = np.concatenate(parts) if parts else np.empty(0, np.int32)

        trimmed_tokens = np.zeros(n, dtype=np.int64)
        if self.reasoning_slot is not None:
            ok &= self._trim(table, ledger, texts["reasoning"], flats["reasoning"], starts, lengths, ok, trimmed_tokens)
        totals = lengths.sum(axis=1)
        empty = ok & (totals == 0)
        for i in np.nonzero(empty)[0].tolist():
            ledger.reject("tokenize", "no_tokens", table["source"][i].as_py(), location=_location(table, i),
                          record_id=table["id"][i].as_py(), detail="the formatted record has no tokens")
        ok &= ~empty

        sel = np.nonzero(ok)[0]
        Lk = lengths[sel]
        flat_len = Lk.ravel()
        ids = src[_ranges(starts[sel].ravel(), flat_len)]
        loss = np.repeat(np.tile(self.slot_loss, sel.size), flat_len).astype(np.uint8)
        rec_tokens = Lk.sum(axis=1)
        rec_start = np.cumsum(rec_tokens) - rec_tokens

        if self.kind == "document":
            # Split each record into ceil(n / context) consecutive pieces.
            n_pieces = -(-rec_tokens // self.context)
            row = np.repeat(sel, n_pieces)
            first = np.cumsum(n_pieces) - n_pieces
            piece = np.arange(row.size, dtype=np.int64) - np.repeat(first, n_pieces)
            p_start = np.repeat(rec_start, n_pieces) + piece * self.context
            p_len = np.minimum(self.context, np.repeat(rec_tokens, n_pieces) - piece * self.context)
            trimmed = np.zeros(row.size, dtype=bool)
            dropped = np.zeros(row.size, dtype=np.int64)
        else:
            row = sel
            piece = np.zeros(sel.size, dtype=np.int64)
            p_start = rec_start
            p_len = rec_tokens
            dropped = trimmed_tokens[sel]
            trimmed = dropped > 0
        offsets = np.append(p_start, ids.size).astype(np.int32)
        cum_loss = np.concatenate([[0], np.cumsum(loss, dtype=np.int64)])
        loss_tokens = cum_loss[p_start + p_len] - cum_loss[p_start]
        take = pa.array(row, pa.int64())
        cols = {
            "id": table["id"].take(take),
            "source": table["source"].take(take),
            "category": table["category"].take(take),
            "file_index": table["file_index"].take(take),
            "row_index": table["row_index"].take(take),
            "piece": pa.array(piece.astype(np.int32)),
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)),
            "loss_mask": pa.ListArray.from_arrays(pa.array(offsets), pa.array(loss)),
            "num_tokens": pa.array(p_len.astype(np.int32)),
            "loss_tokens": pa.array(loss_tokens.astype(np.int32)),
            "trimmed": pa.array(trimmed),
            "trimmed_tokens": pa.array(dropped.astype(np.int32)),
        }
        arrays = [cols[f.name].cast(f.type) for f in TOKENIZED]
        return pa.Table.from_arrays(arrays, schema=TOKENIZED)

    # -- answer-preserving trimming ----------------------------------------------------

    def _trim(self, table: pa.Table, ledger: Ledger, texts: list[str], flat: tuple[np.ndarray, np.ndarray],
              starts: np.ndarray, lengths: np.ndarray, ok: np.ndarray, trimmed_tokens: np.ndarray) -> np.ndarray:
        """Shortens the reasoning slot of over-long samples in place (lengths, trimmed_tokens);
        returns the mask of samples that are kept (False for rejections)."""
        r = self.reasoning_slot
        assert r is not None
        head = lengths[:, :r].sum(axis=1)
        tail = lengths[:, r + 1:].sum(axis=1)
        body = lengths[:, r].copy()
        needs, rejected, budget = plan_trim(head, body, tail, self.context)
        rejected &= ok
        needs &= ok
        for i in np.nonzero(rejected)[0].tolist():
            ledger.reject("trim", "prompt_and_answer_exceed_context", table["source"][i].as_py(),
                          location=_location(table, i), record_id=table["id"][i].as_py(),
                          detail=f"prompt, template and answer take {int(head[i] + tail[i])} tokens; "
                                 f"context is {self.context}")
        idx = np.nonzero(needs)[0]
        if idx.size:
            ids_flat, lens = flat
            keep = self._cuts(texts, idx, ids_flat, np.cumsum(lens) - lens, body, budget)
            lengths[idx, r] = keep
            trimmed_tokens[idx] = body[idx] - keep
        return ~rejected

    def _cuts(self, texts: list[str], idx: np.ndarray, ids_flat: np.ndarray, ids_start: np.ndarray,
              body: np.ndarray, budget: np.ndarray) -> np.ndarray:
        """How many reasoning tokens each sample in `idx` keeps (see `trim.choose_cut`).

        Byte-level tokenizers locate tokens in the text from the byte length of each id
        (no re-tokenization); a sample whose byte lengths do not add up to its text (a
        normalizer, an unknown symbol) and any other tokenizer use character offsets."""
        keep = np.empty(idx.size, dtype=np.int64)
        byte_len = self.tok.byte_lengths
        slow: list[int] = []
        for j, i in enumerate(idx.tolist()):
            b = int(budget[i])
            if byte_len is not None:
                s = int(ids_start[i])
                lens = byte_len[ids_flat[s:s + int(body[i])]]
                data = texts[i].encode("utf-8", "surrogatepass")
                if int(lens.sum()) == len(data) and lens.min(initial=0) >= 0:
                    keep[j] = choose_cut_bytes(data, np.cumsum(lens[:b]).tolist(), b, self.trim_window)
                    continue
            slow.append(j)
        if slow:
            sel = idx[slow]
            offsets = self._offsets(texts, sel, ids_flat, ids_start, body, budget)
            for j, i in zip(slow, sel.tolist()):
                keep[j] = choose_cut(texts[i], offsets[i], int(budget[i]), self.trim_window)
        return keep

    def _offsets(self, texts: list[str], idx: np.ndarray, ids_flat: np.ndarray, ids_start: np.ndarray,
                 body: np.ndarray, budget: np.ndarray) -> dict[int, list[tuple[int, int]]]:
        """Character offsets of reasoning tokens 0..budget for each sample in `idx`.

        The batch was tokenized without offsets (faster), so only the part that matters is
        re-tokenized with them: a text prefix estimated to hold budget+2 tokens. Tokens
        before the prefix's last pre-token are exactly those of the full text; this is
        checked against the ids, and a sample whose prefix was too short is re-tokenized
        in full."""
        tok = self.tok.text_tokenizer
        prefixes = []
        for i in idx.tolist():
            text = texts[i]
            need = int(budget[i]) + 2
            q = min(len(text), math.ceil(len(text) * need / max(1, int(body[i])) * 1.25) + 256)
            prefixes.append(text[:q])
        out: dict[int, list[tuple[int, int]]] = {}
        retry = []
        for i, enc in zip(idx.tolist(), tok.encode_batch(prefixes, add_special_tokens=False)):
            b = int(budget[i])
            s = int(ids_start[i])
            if len(enc) >= b + 2 and np.array_equal(np.asarray(enc.ids[: b + 1], dtype=np.int32), ids_flat[s:s + b + 1]):
                out[i] = enc.offsets
            else:
                retry.append(i)
        if retry:
            for i, enc in zip(retry, tok.encode_batch([texts[i] for i in retry], add_special_tokens=False)):
                s = int(ids_start[i])
                if not np.array_equal(np.asarray(enc.ids, dtype=np.int32), ids_flat[s:s + int(body[i])]):
                    raise RuntimeError(f"tokenizer {self.tok.path!r} gave different ids with and without offsets")
                out[i] = enc.offsets
        return out
