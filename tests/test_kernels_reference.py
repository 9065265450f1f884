"""The PyTorch reference functions behind the Triton kernels, checked on the CPU.

Two kinds of check: against an explicit float64 formula written out here, and against the
upstream `transformers` ZAYA modules (the numerical oracle for the model), so the kernels'
oracle is itself pinned to upstream. Tiny shapes; no GPU needed.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.kernels import reference as ref

zaya = pytest.importorskip("transformers.models.zaya.modeling_zaya")


def _cfg():
    from transformers import ZayaConfig

    return ZayaConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=5,
        moe_intermediate_size=24, router_hidden_size=32, num_hidden_layers=2, vocab_size=128,
        eos_token_id=1, bos_token_id=2, pad_token_id=0,
    )


def _randomize(module: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)


def test_rms_norm_reference_is_the_textbook_formula_in_float64() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 37, generator=g, dtype=torch.float64)
    w = torch.randn(37, generator=g, dtype=torch.float64)
    out = ref.rms_norm(x, w, 1e-5)
    for r in range(5):
        rms = math.sqrt(sum(v * v for v in x[r].tolist()) / 37 + 1e-5)
        expect = [wi * xi / rms for wi, xi in zip(w.tolist(), x[r].tolist())]
        assert out[r].tolist() == pytest.approx(expect, rel=1e-12, abs=1e-12)


def test_add_rms_norm_reference_equals_upstream_residual_scaling_then_norm_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(1)
    hidden = 64
    norm = zaya.ZayaRMSNorm(hidden, eps=1e-5).to(torch.bfloat16)
    scale = zaya.ZayaResidualScaling(hidden).to(torch.bfloat16)
    _randomize(norm, g)
    _randomize(scale, g)
    x = torch.randn(3, 7, hidden, generator=g).to(torch.bfloat16)
    res = torch.randn(3, 7, hidden, generator=g) * 3  # the fp32 residual stream
    with torch.no_grad():
        up_res = scale(x, res)
        up_y = norm(up_res.to(torch.bfloat16))
    parts = ref.ResidualScaling(scale.hidden_states_scale, scale.hidden_states_bias, scale.residual_scale, scale.residual_bias)
    y, new_res = ref.add_rms_norm(x, res, norm.weight.detach(), 1e-5, parts)
    assert new_res.dtype == torch.float32 and y.dtype == torch.bfloat16
    assert torch.equal(new_res, up_res)
    assert torch.equal(y, up_y)


def test_partial_rotary_reference_equals_upstream_rotary_embedding() -> None:
    cfg = _cfg()
    rope = zaya.ZayaRotaryEmbedding(cfg)
    g = torch.Generator().manual_seed(2)
    t = 11
    q = torch.randn(1, 4, t, 16, generator=g)
    k = torch.randn(1, 2, t, 16, generator=g)
    pos = torch.tensor([[0, 1, 2, 3, 900, 901, 5000, 70000, 131071, 7, 8]])
    cos, sin = rope(q, pos, "hybrid")
    up_q, up_k = zaya.apply_rotary_pos_emb(q, k, cos, sin)
    inv_freq = rope.hybrid_inv_freq
    assert inv_freq.shape == (4,)  # 8 of 16 dims rotated: partial_rotary_factor 0.5
    qo, ko = ref.apply_partial_rotary(q[0].transpose(0, 1), k[0].transpose(0, 1), pos[0], inv_freq)
    assert torch.allclose(qo, up_q[0].transpose(0, 1), rtol=0, atol=1e-6)
    assert torch.allclose(ko, up_k[0].transpose(0, 1), rtol=0, atol=1e-6)
    assert torch.equal(qo[..., 8:], q[0].transpose(0, 1)[..., 8:])


def _explicit_attention(q, k, v, qpos0, window):
    """Row-by-row softmax attention in float64 python-visible steps (one query head)."""
    out = torch.zeros_like(q)
    d = q.shape[-1]
    for i in range(q.shape[0]):
        p = qpos0 + i
        keys = [j for j in range(k.shape[0]) if j <= p and (window is None or j > p - window)]
        s = torch.stack([q[i] @ k[j] / math.sqrt(d) for j in keys])
        w = torch.exp(s - s.max())
        w = w / w.sum()
        out[i] = sum(w[n] * v[j] for n, j in enumerate(keys))
    return out


@pytest.mark.parametrize("window", [None, 4])
def test_prefill_reference_matches_explicit_softmax_with_prefix_and_groups(window: int | None) -> None:
    g = torch.Generator().manual_seed(3)
    lens_q, lens_k = [3, 6], [5, 6]
    q = torch.randn(sum(lens_q), 4, 16, generator=g, dtype=torch.float64)
    k = torch.randn(sum(lens_k), 2, 16, generator=g, dtype=torch.float64)
    v = torch.randn(sum(lens_k), 2, 16, generator=g, dtype=torch.float64)
    cu_q = torch.tensor([0, 3, 9], dtype=torch.int32)
    cu_k = torch.tensor([0, 5, 11], dtype=torch.int32)
    out = ref.cca_prefill_attention(q, k, v, cu_q, cu_k, sliding_window=window)
    for b in range(2):
        for h in range(4):
            qs = q[cu_q[b] : cu_q[b + 1], h]
            ks, vs = k[cu_k[b] : cu_k[b + 1], h // 2], v[cu_k[b] : cu_k[b + 1], h // 2]
            expect = _explicit_attention(qs, ks, vs, lens_k[b] - lens_q[b], window)
            assert torch.allclose(out[cu_q[b] : cu_q[b + 1], h], expect, rtol=1e-12, atol=1e-12)


def test_decode_reference_on_a_scattered_paged_cache_equals_prefill_last_row() -> None:
    g = torch.Generator().manual_seed(4)
    lens = [9, 4]
    page = 4
    q_all = torch.randn(sum(lens), 4, 16, generator=g, dtype=torch.float64)
    k_all = torch.randn(sum(lens), 2, 16, generator=g, dtype=torch.float64)
    v_all = torch.randn(sum(lens), 2, 16, generator=g, dtype=torch.float64)
    cu = torch.tensor([0, 9, 13], dtype=torch.int32)
    full = ref.cca_prefill_attention(q_all, k_all, v_all, cu)
    # pages handed out in a shuffled order, as a paged allocator would
    table = torch.tensor([[5, 0, 3], [1, 6, 2]], dtype=torch.int32)
    kc = torch.zeros(8, page, 2, 16, dtype=torch.float64)
    vc = torch.zeros_like(kc)
    for b, n in enumerate(lens):
        for t in range(n):
            kc[table[b, t // page], t % page] = k_all[cu[b] + t]
            vc[table[b, t // page], t % page] = v_all[cu[b] + t]
    q_last = torch.stack([q_all[cu[1] - 1], q_all[cu[2] - 1]])
    out = ref.cca_decode_attention(q_last, kc, vc, table, torch.tensor(lens, dtype=torch.int32))
    assert torch.allclose(out[0], full[8], rtol=1e-12, atol=1e-12)
    assert torch.allclose(out[1], full[12], rtol=1e-12, atol=1e-12)


def test_paged_view_maps_a_contiguous_cache_without_copying() -> None:
    cache = torch.arange(2 * 8 * 1 * 2, dtype=torch.float32).view(2, 8, 1, 2)
    pages, table = ref.paged_view(cache, 4)
    assert pages.data_ptr() == cache.data_ptr()
    assert table.tolist() == [[0, 1], [2, 3]]
    assert torch.equal(pages[table[1, 1], 3], cache[1, 7])
    with pytest.raises(ValueError, match="multiple of page_size"):
        ref.paged_view(cache, 3)


def test_conv_decode_steps_reproduce_upstream_full_sequence_convolution() -> None:
    cfg = _cfg()
    proj = zaya.ZayaCCAProjection(cfg, layer_idx=0).double()
    g = torch.Generator().manual_seed(5)
    _randomize(proj, g)
    c = (4 + 2) * 16
    b, t = 2, 6
    qk = torch.randn(b, t, c, generator=g, dtype=torch.float64)
    with torch.no_grad():
        padded = F.pad(qk.transpose(1, 2), (2, 0))  # upstream's left pad of 2 with no cache
        full = proj.conv_qk_grouped(proj.conv_qk_depthwise(padded))  # [B, C, T]
    state = torch.zeros(b, c, 2, dtype=torch.float64)
    dw, gw = proj.conv_qk_depthwise, proj.conv_qk_grouped
    assert gw.weight.shape == (c, 16, 2)
    for step in range(t):
        out = ref.cca_conv_decode(qk[:, step], state, dw.weight.detach(), dw.bias.detach(), gw.weight.detach(), gw.bias.detach())
        assert torch.allclose(out, full[:, :, step], rtol=1e-12, atol=1e-12)
        assert torch.equal(state[:, :, 1], qk[:, step])


def test_moe_reference_equals_upstream_experts_with_skip_as_zero_weight() -> None:
    cfg = _cfg()
    experts = zaya.ZayaExperts(cfg).double()
    g = torch.Generator().manual_seed(6)
    _randomize(experts, g)
    x = torch.randn(13, 64, generator=g, dtype=torch.float64)
    ids = torch.tensor([0, 5, 1, 1, 4, 5, 2, 3, 0, 4, 4, 5, 1])  # 5 = skip class
    w = torch.rand(13, generator=g, dtype=torch.float64)
    skip = ids == 5
    with torch.no_grad():  # upstream's router hands the experts (index 0, weight 0) for a skip
        up = experts(x, ids.masked_fill(skip, 0)[:, None], w.masked_fill(skip, 0)[:, None])
    out = ref.moe_top1(x, ids, w, experts.gate_up_proj.detach(), experts.down_proj.detach())
    assert torch.allclose(out, up, rtol=1e-12, atol=1e-12)
    assert torch.all(out[skip] == 0)
    # one token by hand: silu(gate) * up through expert 4, scaled by its weight
    gu = experts.gate_up_proj[4].detach() @ x[4]
    h = F.silu(gu[:24]) * gu[24:]
    assert torch.allclose(out[4], w[4] * (experts.down_proj[4].detach() @ h), rtol=1e-12, atol=1e-12)


def test_router_reference_equals_upstream_router_choice_and_weight() -> None:
    cfg = _cfg()
    router = zaya.ZayaRouter(cfg, layer_idx=1).double()
    g = torch.Generator().manual_seed(7)
    _randomize(router, g)
    with torch.no_grad():
        # a skip bias that makes the skip class win for some tokens but not all
        router.balancing_biases.copy_(torch.zeros(6, dtype=torch.float64))
        router.balancing_biases[-1] = 0.12
    x = torch.randn(1, 40, 64, generator=g, dtype=torch.float64)
    prev = torch.randn(1, 40, 32, generator=g, dtype=torch.float64)
    with torch.no_grad():
        _, up_w, up_idx, _ = router(x, prev)
        s = router.down_proj(x) + prev * router.router_states_scale
    mlp = router.router_mlp
    weight, choice = ref.router_top1(
        s[0], mlp.norm.weight.detach(), mlp.fc1.weight.detach(), mlp.fc1.bias.detach(), mlp.fc2.weight.detach(),
        mlp.fc2.bias.detach(), mlp.out_proj.weight.detach(), router.balancing_biases, 1e-5,
    )
    skip = choice == 5
    assert 0 < int(skip.sum()) < 40, "the test bias should make some but not all tokens skip"
    assert torch.equal(torch.where(skip, 0, choice).long(), up_idx[:, 0])
    # Upstream's RMSNorm computes in fp32 even for float64 inputs: agreement is at fp32 level.
    assert torch.allclose(weight, up_w[:, 0], rtol=1e-6, atol=1e-7)
    assert torch.all(weight[skip] == 0)
