"""The engine's decoding memory: fixed-size pages of compressed K/V, and per-sequence state slots.

CCA keeps per layer and token only the compressed K/V (`num_key_value_heads` heads), which is
what pages hold: k_pages[layer] is [num_pages, page_size, Hk, D] (the layout of
`cca_decode_attention`'s paged cache). The two other pieces of CCA state do not grow with the
sequence (the last 2 positions of the packed [q0, k0] for the convolutions, and the previous
position's delayed value), so they live in one fixed slot per running sequence.

Pages are reference-counted so the n rollouts of one prompt can share the prompt's full pages:
a shared page is never written again (tokens are only appended, and a full page has no free
position), so sharing needs no copy-on-write machinery beyond copying the one partially filled
page at the fork. Page 0 and slot 0 are scratch: padded rows of a CUDA-graph batch read and
write them, so they are never handed out.
"""

from __future__ import annotations

import torch

from model.config import Zaya1Config

from .transfer import to_device

SCRATCH = 0  # page and slot index reserved for padding rows


class PagePool:
    """Free list and reference counts of `num_pages` pages (page 0 reserved)."""

    def __init__(self, num_pages: int) -> None:
        if num_pages < 2:
            raise ValueError(f"num_pages={num_pages}: need at least one page besides the scratch page")
        self.num_pages = num_pages
        self.refcount = [0] * num_pages
        # Pop from the end: low page ids first, which keeps test expectations readable.
        self._free = list(range(num_pages - 1, SCRATCH, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def capacity(self) -> int:
        return self.num_pages - 1

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise MemoryError(f"{n} pages requested, {len(self._free)} free")
        pages = [self._free.pop() for _ in range(n)]
        for p in pages:
            self.refcount[p] = 1
        return pages

    def share(self, pages: list[int]) -> None:
        for p in pages:
            if self.refcount[p] <= 0:
                raise ValueError(f"page {p} is not allocated")
            self.refcount[p] += 1

    def release(self, pages: list[int]) -> None:
        for p in pages:
            if self.refcount[p] <= 0:
                raise ValueError(f"page {p} released more often than held")
            self.refcount[p] -= 1
            if self.refcount[p] == 0:
                self._free.append(p)


class SlotPool:
    """Free list of per-sequence state slots (slot 0 reserved)."""

    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self._free = list(range(num_slots - 1, SCRATCH, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise MemoryError("no free state slot")
        return self._free.pop()

    def release(self, slot: int) -> None:
        self._free.append(slot)


class PagedCache:
    """Device storage: K/V pages, conv/value state slots, and a per-slot block table on the device.

    The block table lives on the device and is updated incrementally (a sequence gains at most
    one page per decode step), so a decode step gathers its rows there instead of shipping a
    [batch, pages] table from the host every step.
    """

    def __init__(
        self,
        config: Zaya1Config,
        num_pages: int,
        page_size: int,
        num_slots: int,
        max_pages_per_seq: int,
        *,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        if config.conv_state_len != 2:
            raise ValueError(f"the engine's convolution step needs cca_time0 = cca_time1 = 2 (state of 2), "
                             f"got a state of {config.conv_state_len}")
        layers, hk, d = config.num_hidden_layers, config.num_key_value_heads, config.head_dim
        self.page_size = page_size
        self.max_pages_per_seq = max_pages_per_seq
        self.k = torch.zeros(layers, num_pages, page_size, hk, d, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.conv = torch.zeros(layers, num_slots, config.conv_channels, 2, device=device, dtype=dtype)
        self.value = torch.zeros(layers, num_slots, hk * d // 2, device=device, dtype=dtype)
        self.block_table = torch.zeros(num_slots, max_pages_per_seq, device=device, dtype=torch.int32)
        self.pages = PagePool(num_pages)
        self.slots = SlotPool(num_slots)
        self._pending: list[tuple[int, int, int]] = []  # (slot, column, page) not yet on the device

    def set_pages(self, slot: int, first_column: int, pages: list[int]) -> None:
        """Record that `slot`'s sequence holds `pages` from block-table column `first_column` on."""
        if first_column + len(pages) > self.max_pages_per_seq:
            raise ValueError(f"slot {slot}: {first_column + len(pages)} pages exceed {self.max_pages_per_seq} per sequence")
        self._pending.extend((slot, first_column + i, p) for i, p in enumerate(pages))

    def flush(self) -> None:
        """Write the recorded block-table entries to the device (one small copy)."""
        if not self._pending:
            return
        entries = to_device(torch.tensor(self._pending, dtype=torch.int64), self.block_table.device)
        self.block_table[entries[:, 0], entries[:, 1]] = entries[:, 2].to(torch.int32)
        self._pending.clear()

    def copy_page(self, src: int, dst: int) -> None:
        """Copy one page's K/V in every layer (the fork of a partially filled prompt page)."""
        self.k[:, dst].copy_(self.k[:, src])
        self.v[:, dst].copy_(self.v[:, src])

    def copy_state(self, src: int, dst: int) -> None:
        """Copy a slot's conv and value state in every layer (the fork of a rollout)."""
        self.conv[:, dst].copy_(self.conv[:, src])
        self.value[:, dst].copy_(self.value[:, src])

    def nbytes_per_token(self) -> int:
        """K/V bytes one cached token costs across all layers."""
        per_page = self.k[:, 0].numel() * self.k.element_size() * 2
        return per_page // self.page_size

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.conv, self.value, self.block_table))
