"""Read and write Hugging Face-layout ZAYA1 checkpoint folders, safetensors only.

A folder holds `config.json`, either `model.safetensors` or shards listed by
`model.safetensors.index.json`, and optionally `tokenizer.json`. Nothing is ever
unpickled: a folder with only `.bin`/`.pt` weights is refused.

Every tensor of the model must be present once with the right shape: a missing,
unexpected or mis-shaped tensor is a `CheckpointError` naming the tensor and its file.
With tied embeddings `lm_head.weight` may be absent (Hugging Face drops it on save); if it
is present it must equal `model.embed_tokens.weight`.

`balancing_biases` load AS STORED. The reference's `from_pretrained` (transformers 5.23/5.24)
re-runs weight init on that buffer after loading, forcing the skip class to -1.0 so that
mixture-of-depths never fires; we treat that as an initialization quirk, not the model: the
stored value is what training produced. Pass `force_skip_bias=-1.0` to reproduce the
reference's behaviour exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zaya_data.io import atomic_replace, atomic_write_text, tmp_path_for

from .config import Zaya1Config
from .zaya1 import RotaryEmbedding, Zaya1ForCausalLM

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
TOKENIZER_NAME = "tokenizer.json"
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and tensor."""


def _weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file that must hold it."""
    index_path = folder / INDEX_NAME
    single = folder / WEIGHTS_NAME
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            weight_map = index["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index_path}: not a safetensors index with a 'weight_map' ({exc})") from exc
        files = {}
        for name, shard in weight_map.items():
            path = folder / shard
            if not shard.endswith(".safetensors"):
                raise CheckpointError(f"{index_path}: tensor {name!r} maps to {shard!r}, not a .safetensors file")
            if not path.is_file():
                raise CheckpointError(f"{index_path}: tensor {name!r} maps to missing shard {path}")
            files[name] = path
        return files
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            return {name: single for name in f.keys()}
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED_SUFFIXES) if folder.is_dir() else []
    if pickled:
        raise CheckpointError(
            f"{folder}: holds pickled weights {pickled} only; pickles are never loaded (they can run code). "
            f"Convert them to {WEIGHTS_NAME} first."
        )
    raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} and no {INDEX_NAME}")


def load_config(folder: str | Path) -> Zaya1Config:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    return Zaya1Config.from_json_file(path)


def load_tokenizer(folder: str | Path):  # -> tokenizers.Tokenizer | None
    path = Path(folder) / TOKENIZER_NAME
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def load_weights(
    model: Zaya1ForCausalLM,
    folder: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    force_skip_bias: float | None = None,
) -> None:
    """Fill `model` (possibly on the meta device) from the folder's safetensors, checking every tensor."""
    folder = Path(folder)
    files = _weight_files(folder)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    tied = model.config.tie_word_embeddings
    optional = {"lm_head.weight"} if tied else set()

    unexpected = sorted(set(files) - set(expected))
    if unexpected:
        listed = ", ".join(f"{n!r} (in {files[n].name})" for n in unexpected[:8])
        raise CheckpointError(f"{folder}: unexpected tensors {listed}" + (" ..." if len(unexpected) > 8 else ""))
    missing = sorted(set(expected) - set(files) - optional)
    if missing:
        raise CheckpointError(
            f"{folder}: missing tensors {missing[:8]}" + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        )

    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in sorted(by_file.items()):
        with safe_open(path, framework="pt", device="cpu") as f:
            present = set(f.keys())
            for name in names:
                if name not in present:
                    raise CheckpointError(f"{path}: tensor {name!r} listed in {INDEX_NAME} is not in this file")
                shape = tuple(f.get_slice(name).get_shape())
                if shape != expected[name]:
                    raise CheckpointError(f"{path}: tensor {name!r} has shape {shape}, expected {expected[name]}")
                tensor = f.get_tensor(name)
                if not tensor.is_floating_point():
                    raise CheckpointError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, expected floating point")
                # The router's balancing biases stay fp32: they break near-ties between experts.
                target = torch.float32 if name.endswith("balancing_biases") else dtype
                # copy=True: a fresh, aligned buffer. Memory straight from the file can be
                # misaligned, which sends CPU kernels down other paths (last-bit differences).
                state[name] = tensor.to(device=device, dtype=target, copy=True)

    if tied and "lm_head.weight" in state:
        head = state.pop("lm_head.weight")
        if not torch.equal(head, state["model.embed_tokens.weight"]):
            raise CheckpointError(
                f"{files['lm_head.weight']}: 'lm_head.weight' differs from 'model.embed_tokens.weight' "
                "but the config ties them (tie_word_embeddings=true)"
            )
    if tied:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    if force_skip_bias is not None:
        for name in state:
            if name.endswith("balancing_biases"):
                state[name][-1] = force_skip_bias

    model.load_state_dict(state, strict=True, assign=True)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    # Non-persistent RoPE tables are not in the checkpoint: rebuild them where the weights live.
    model.model.rotary_emb = RotaryEmbedding(model.config).to(device)
    model.requires_grad_(False)


def load_model(
    folder: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    force_skip_bias: float | None = None,
) -> Zaya1ForCausalLM:
    """Build the model from `folder/config.json` on the meta device and load its weights onto `device`."""
    config = load_config(folder)
    with torch.device("meta"):
        model = Zaya1ForCausalLM(config)
    load_weights(model, folder, device=device, dtype=dtype, force_skip_bias=force_skip_bias)
    return model.eval()


def load_pretrained(
    folder: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
):  # -> tuple[Zaya1ForCausalLM, tokenizers.Tokenizer | None]
    return load_model(folder, device=device, dtype=dtype), load_tokenizer(folder)


def save_checkpoint(
    model: Zaya1ForCausalLM,
    folder: str | Path,
    *,
    tokenizer_file: str | Path | None = None,
    max_shard_bytes: int | None = None,
) -> None:
    """Write config.json, the weights (one file, or shards + index above `max_shard_bytes`) and tokenizer.json.

    Tied `lm_head.weight` is not written (as Hugging Face does). Files are replaced atomically.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CONFIG_NAME, model.config.to_json())
    state = {
        name: t.detach().to("cpu").contiguous()
        for name, t in model.state_dict().items()
        if not (model.config.tie_word_embeddings and name == "lm_head.weight")
    }
    total = sum(t.numel() * t.element_size() for t in state.values())
    metadata = {"format": "pt"}
    if max_shard_bytes is None or total <= max_shard_bytes:
        tmp = tmp_path_for(folder / WEIGHTS_NAME)
        save_file(state, str(tmp), metadata=metadata)
        atomic_replace(tmp, folder / WEIGHTS_NAME)
        (folder / INDEX_NAME).unlink(missing_ok=True)
    else:
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for name, t in state.items():
            nbytes = t.numel() * t.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = t
            size += nbytes
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            shard_name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            tmp = tmp_path_for(folder / shard_name)
            save_file(shard, str(tmp), metadata=metadata)
            atomic_replace(tmp, folder / shard_name)
            weight_map.update({name: shard_name for name in shard})
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        atomic_write_text(folder / INDEX_NAME, json.dumps(index, indent=2) + "\n")
        (folder / WEIGHTS_NAME).unlink(missing_ok=True)
    if tokenizer_file is not None:
        tmp = tmp_path_for(folder / TOKENIZER_NAME)
        shutil.copyfile(tokenizer_file, tmp)
        atomic_replace(tmp, folder / TOKENIZER_NAME)
