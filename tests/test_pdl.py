"""Programmatic dependent launch (model/kernels/pdl.py): when it is on, and that it changes no bit.

PDL only lets a kernel be scheduled before its predecessor has finished; every kernel waits for
the predecessor before touching memory. A kernel that read too early would see a stale or
half-written input, so the GPU test runs a decode-shaped chain (norm -> linear -> router ->
MoE -> norm, each consuming the last one's output) inside a CUDA graph with PDL on and off and
requires the same bits, replay after replay.
"""

from __future__ import annotations

import pytest
import torch

from model.kernels import pdl


def test_pdl_is_off_on_the_cpu_under_the_interpreter_and_when_switched_off(monkeypatch) -> None:
    assert pdl.pdl_launch(torch.device("cpu")) == {"PDL": False}
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not pdl.pdl_enabled(torch.device("cuda", 0))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv("ZAYA_PDL", "0")
    assert not pdl.pdl_enabled(torch.device("cuda", 0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_decode_chain_gives_the_same_bits_with_and_without_pdl(monkeypatch) -> None:
    from model.kernels import add_rms_norm, linear, moe_top1, rms_norm, router_top1

    major = torch.cuda.get_device_capability()[0]
    g = torch.Generator(device="cuda").manual_seed(5)

    def w(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, device="cuda", generator=g) * scale).to(torch.bfloat16)

    t, h, r, e, i = 256, 2048, 256, 16, 2048
    x0, res = w(t, h), torch.randn(t, h, device="cuda", generator=g)
    norm_w, down_w, down_b = w(h), w(r, h, scale=h**-0.5), w(r)
    router = (w(r), w(r, r, scale=r**-0.5), w(r), w(r, r, scale=r**-0.5), w(r), w(e + 1, r, scale=r**-0.5),
              torch.zeros(e + 1, device="cuda"))
    gate_up, down = w(e, 2 * i, h, scale=h**-0.5), w(e, h, i, scale=i**-0.5)

    def chain() -> torch.Tensor:
        x = rms_norm(x0, norm_w, 1e-5)
        s = linear(x, down_w, down_b)
        weight, choice = router_top1(s, *router, 1e-5)
        m = moe_top1(x, choice, weight, gate_up, down)
        y, _ = add_rms_norm(m, res, norm_w, 1e-5)
        return linear(y, down_w, down_b)

    results = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("ZAYA_PDL", flag)
        assert pdl.pdl_enabled(torch.device("cuda")) == (flag == "1" and major >= 9)
        chain()  # compile outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = chain()
        runs = []
        for _ in range(5):
            graph.replay()
            runs.append(out.clone())
        torch.cuda.synchronize()
        assert all(torch.equal(runs[0], run) for run in runs), f"ZAYA_PDL={flag}: replays differ"
        results[flag] = runs[0]
    assert torch.equal(results["0"], results["1"]), "PDL changed the result: a kernel read its input too early"
