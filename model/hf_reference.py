"""Bridge to the reference implementation, upstream `transformers.ZayaForCausalLM` (a test oracle).

Imports transformers lazily: the model itself never needs it.
"""

from __future__ import annotations

from .zaya1 import Zaya1ForCausalLM


def reference_model(model: Zaya1ForCausalLM, *, attn_implementation: str = "eager"):
    """`transformers.ZayaForCausalLM` with the same configuration and a copy of `model`'s weights."""
    from transformers import ZayaConfig, ZayaForCausalLM

    raw = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures")}
    config = ZayaConfig(**raw)
    config._attn_implementation = attn_implementation
    reference = ZayaForCausalLM(config).to(model.dtype).eval()
    # strict=True: every name and shape of ours must be one of the reference's, and vice versa.
    reference.load_state_dict(model.state_dict(), strict=True)
    return reference
