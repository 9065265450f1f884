"""Continuous batching: which sequences run this step, and the pages they need.

Each step gets a token budget (`max_num_tokens`) and a batch cap (`max_batch_size` live
sequences). Decoding sequences come first, one token each; what is left of the budget goes to
prefill chunks: first to prompts already being prefilled, then to newly admitted ones in arrival
order (a long prompt is split over several steps, so it never stalls the decoders for long).

Memory: an admitted sequence gets all pages of its prompt at once; a decoding sequence gets a
page when it crosses a page boundary. When the pool is empty, the newest decoding sequence is
preempted: its pages and slot are released and it is queued again to be recomputed (prompt and
the tokens it has so far are prefilled again; its sampling noise depends only on its seed and
token index, so it continues with the tokens it would have drawn anyway).

Prefix sharing: fresh requests waiting with identical prompts are admitted together; only the
first (the leader) is prefilled, the others wait as FORKING and, when the leader's prefill
completes, share its full prompt pages (refcounted) and take a copy of its partially filled last
page and of its conv/value state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .pages import PagedCache
from .sequence import Sequence, Status


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class StepPlan:
    decode: list[Sequence] = field(default_factory=list)
    prefill: list[tuple[Sequence, int]] = field(default_factory=list)  # (sequence, chunk length)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.decode and not self.prefill


class Scheduler:
    def __init__(self, cache: PagedCache, max_batch_size: int, max_num_tokens: int) -> None:
        if max_num_tokens < max_batch_size:
            raise ValueError(f"max_num_tokens={max_num_tokens} must be >= max_batch_size={max_batch_size}: "
                             "every decoding sequence takes one token of the step's budget")
        self.cache = cache
        self.page_size = cache.page_size
        self.max_batch_size = max_batch_size
        self.max_num_tokens = max_num_tokens
        self.waiting: deque[Sequence] = deque()
        self.active: list[Sequence] = []  # PREFILL, FORKING and RUNNING, in arrival order
        self.num_preemptions = 0

    # ---- queue --------------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.active)

    def finish(self, seq: Sequence) -> None:
        """Release a finished sequence's pages and slot."""
        self._release(seq)
        seq.status = Status.FINISHED
        self.active.remove(seq)

    def abort(self, seq: Sequence) -> None:
        if seq in self.waiting:
            self.waiting.remove(seq)
        else:
            for f in seq.followers:  # siblings still waiting for this leader's prefill go back to the queue
                self.cache.pages.release(f.pages)
                f.pages = []
                self._requeue(f)
            seq.followers = []
            self._release(seq)
            self.active.remove(seq)
        seq.status = Status.FINISHED

    def _release(self, seq: Sequence) -> None:
        self.cache.pages.release(seq.pages)
        seq.pages = []
        if seq.slot is not None:
            self.cache.slots.release(seq.slot)
            seq.slot = None

    def _preempt(self, seq: Sequence) -> None:
        self._release(seq)
        seq.num_computed = 0
        self._requeue(seq)
        self.num_preemptions += 1

    def _requeue(self, seq: Sequence) -> None:
        """Back to the queue in arrival order, ahead of anything that arrived later."""
        seq.status = Status.WAITING
        self.active.remove(seq)
        index = next((i for i, s in enumerate(self.waiting) if s.arrival > seq.arrival), len(self.waiting))
        self.waiting.insert(index, seq)

    # ---- one step -------------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        plan = StepPlan()
        pool = self.cache.pages
        # 1. Decoders, oldest first; each may need a fresh page for the position it writes.
        for seq in [s for s in self.active if s.status is Status.RUNNING and not s.last_in_flight]:
            if seq.status is not Status.RUNNING:  # preempted while serving an older sequence
                continue
            if seq.num_computed // self.page_size < len(seq.pages):
                plan.decode.append(seq)
                continue
            while pool.num_free == 0:
                victim = next(s for s in reversed(self.active) if s.status is Status.RUNNING)
                self._preempt(victim)
                plan.preempted.append(victim)
                if victim in plan.decode:
                    plan.decode.remove(victim)
                if victim is seq:
                    break
            if seq.status is Status.RUNNING:
                page = pool.allocate(1)
                self.cache.set_pages(seq.slot, len(seq.pages), page)
                seq.pages += page
                plan.decode.append(seq)
        budget = self.max_num_tokens - len(plan.decode)
        # 2. Prompts being prefilled continue.
        for seq in self.active:
            if budget <= 0:
                break
            if seq.status is Status.PREFILL:
                chunk = min(seq.prefill_target - seq.num_computed, budget)
                plan.prefill.append((seq, chunk))
                budget -= chunk
        # 3. Admit new sequences (with their prefix-sharing siblings) while budget, batch and pages allow.
        while budget > 0 and self.waiting:
            group = self._group(self.waiting[0], self.max_batch_size - len(self.active))
            if not group:
                break
            leader = group[0]
            target = leader.prefill_target
            partial = target % self.page_size != 0
            need = cdiv(target, self.page_size) + (len(group) - 1 if partial else 0)
            if need > pool.num_free:
                if not self.active and need > pool.capacity:
                    raise MemoryError(f"a prompt of {target} tokens (x{len(group)} rollouts) needs {need} pages; "
                                      f"the pool has {pool.capacity}")
                break
            for s in group:
                self.waiting.remove(s)
            leader.pages = pool.allocate(cdiv(target, self.page_size))
            leader.slot = self.cache.slots.allocate()
            self.cache.set_pages(leader.slot, 0, leader.pages)
            leader.status = Status.PREFILL
            leader.followers = group[1:]
            for f in leader.followers:
                f.status = Status.FORKING
                f.pages = pool.allocate(1) if partial else []  # the copy of the leader's last page
            self.active.extend(group)
            self.active.sort(key=lambda s: s.arrival)
            chunk = min(target, budget)
            plan.prefill.append((leader, chunk))
            budget -= chunk
        return plan

    def _group(self, head: Sequence, room: int) -> list[Sequence]:
        """The head of the queue and the waiting fresh requests with the same prompt (up to `room`)."""
        if room <= 0:
            return []
        if head.output:  # a recompute: its own tokens, never shared
            return [head]
        group = [head]
        for s in self.waiting:
            if len(group) >= room:
                break
            if s is not head and not s.output and s.prompt == head.prompt:
                group.append(s)
        return group

    def fork(self, leader: Sequence) -> list[Sequence]:
        """After the leader's prompt is cached: give each follower the shared pages and its own state."""
        followers, leader.followers = leader.followers, []
        full = leader.num_computed // self.page_size
        shared = leader.pages[:full]
        for f in followers:
            own = f.pages  # the reserved page for the partially filled tail (or none)
            self.cache.pages.share(shared)
            f.slot = self.cache.slots.allocate()
            self.cache.copy_state(leader.slot, f.slot)
            if own:
                self.cache.copy_page(leader.pages[full], own[0])
            f.pages = shared + own
            self.cache.set_pages(f.slot, 0, f.pages)
            f.num_computed = leader.num_computed
            f.status = Status.RUNNING
        return followers
