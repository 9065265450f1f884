"""CUDA graphs of the decode step, one per padded batch-size bucket.

A decode step of the 8B model is ~40 x 20 small launches; at small batch the GPU waits on the
CPU issuing them. A graph replays the whole step with one launch. Shapes must be static, so a
batch of n rows runs in the smallest bucket >= n, its extra rows pointing at the scratch slot
and page. The inputs are one [4, bucket] int64 buffer (token ids, positions, slots, sequence
lengths); split-K of the decode attention is fixed per bucket from `max_model_len` (the kernel
sizes its chunks from the real lengths at run time, so surplus splits are empty programs).
Graphs are captured largest first into one memory pool (vLLM's habit: smaller graphs then fit in
the larger ones' freed intermediates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .runner import DecodeInputs, ModelRunner
from .transfer import copy_to_device


def decode_inputs(buf: torch.Tensor) -> DecodeInputs:
    return DecodeInputs(ids=buf[0], positions=buf[1], slots=buf[2], seq_lens=buf[3].to(torch.int32))


def default_buckets(max_batch_size: int) -> tuple[int, ...]:
    """1, 2, 4, 8, then steps of 8 to 64, then powers of two, ending at max_batch_size."""
    sizes = [b for b in (1, 2, 4) if b < max_batch_size]
    b = 8
    while b < max_batch_size:
        sizes.append(b)
        b = b + 8 if b < 64 else b * 2
    sizes.append(max_batch_size)
    return tuple(sizes)


class DecodeGraphs:
    def __init__(self, runner: ModelRunner, buckets: Sequence[int],
                 splits_for: Callable[[int], dict[int | None, int | None]], scratch_row: list[int]) -> None:
        self.runner = runner
        self.buckets = tuple(sorted(set(buckets)))
        self.splits_for = splits_for
        self.scratch_row = scratch_row  # (token, position, slot, length) of a padding row
        self.pool = None
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def bucket_for(self, n: int) -> int | None:
        return next((b for b in self.buckets if b >= n), None)

    @torch.inference_mode()
    def capture(self) -> None:
        device = self.runner.device
        self.pool = torch.cuda.graph_pool_handle()
        for bucket in sorted(self.buckets, reverse=True):
            buf = torch.tensor(self.scratch_row, dtype=torch.int64, device=device)[:, None].repeat(1, bucket)
            splits = self.splits_for(bucket)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: Triton compiles, the allocator settles
                for _ in range(2):
                    self.runner.decode(decode_inputs(buf), splits)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                logits = self.runner.decode(decode_inputs(buf), splits)
            self.graphs[bucket] = (graph, buf, logits)
        torch.cuda.synchronize()

    def pad(self, host: torch.Tensor, bucket: int) -> torch.Tensor:
        """[4, n] host inputs padded to [4, bucket] with scratch rows (still on the host)."""
        padded = torch.tensor(self.scratch_row, dtype=torch.int64)[:, None].repeat(1, bucket)
        padded[:, : host.shape[1]] = host
        return padded

    def inputs(self, bucket: int) -> torch.Tensor:
        """The [4, bucket] device input buffer of a bucket's graph (fill it, then `replay`)."""
        return self.graphs[bucket][1]

    def replay(self, bucket: int) -> torch.Tensor:
        """Replay a bucket's graph on what its input buffer holds; logits [bucket, V] (valid until
        the next replay)."""
        graph, _, logits = self.graphs[bucket]
        graph.replay()
        return logits

    def run(self, host: torch.Tensor) -> torch.Tensor:
        """Replay for the [4, n] host inputs; logits [n, V] (valid until the next replay)."""
        n = host.shape[1]
        bucket = self.bucket_for(n)
        copy_to_device(self.inputs(bucket), self.pad(host, bucket))
        return self.replay(bucket)[:n]
