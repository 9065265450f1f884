"""Security: nothing in the package can run code hidden in data, checkpoints or configs.

- no pickle (or a pickle-based format) for data, parts, shards or checkpoints;
- no eval/exec of strings; mixture YAML goes through a safe loader;
- build outputs are Parquet, Arrow and JSON only.
API keys for OpenAI-compatible endpoints are covered by
tests/test_rsa_run.py::test_api_key_never_reaches_outputs_logs_or_terminal.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from zaya_data.cli import main
from zaya_data.config import ConfigError, _LineLoader, load_mixture

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
PACKAGES = ("zaya_data", "model")

# Modules whose loading runs code from the bytes they read.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
# Builtins that run code from strings.
UNSAFE_BUILTINS = {"eval", "exec", "compile"}
# Calls that unpickle or construct arbitrary objects: module attribute -> why.
UNSAFE_CALLS = {
    ("torch", "load"): "torch.load unpickles; checkpoints are safetensors",
    ("yaml", "load"): "yaml.load can build arbitrary objects; use a SafeLoader",
    ("yaml", "load_all"): "as yaml.load",
    ("yaml", "unsafe_load"): "as yaml.load",
    ("yaml", "full_load"): "as yaml.load",
    ("pd", "read_pickle"): "unpickles",
    ("pandas", "read_pickle"): "unpickles",
}
# (path, what) -> why it is legitimate. Empty: nothing in the package needs one.
ALLOWED: dict[tuple[str, str], str] = {}


def _findings(path: Path, rel: str) -> list[tuple[str, str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(rel, f"import {a.name}", node.lineno) for a in node.names
                    if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in UNSAFE_MODULES:
            out.append((rel, f"from {node.module} import", node.lineno))
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in UNSAFE_BUILTINS:
                out.append((rel, f"{f.id}()", node.lineno))
            elif isinstance(f, ast.Name) and f.id == "__import__" and not (
                    node.args and isinstance(node.args[0], ast.Constant)):
                out.append((rel, "__import__(<computed name>)", node.lineno))
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in UNSAFE_CALLS:
                out.append((rel, f"{f.value.id}.{f.attr}()", node.lineno))
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    out.append((rel, "allow_pickle=", node.lineno))
                if kw.arg == "Loader" and not (isinstance(kw.value, ast.Attribute) and "Safe" in kw.value.attr
                                              or isinstance(kw.value, ast.Name) and kw.value.id == "_LineLoader"):
                    out.append((rel, "Loader=", node.lineno))
    return out


def _package_files() -> list[tuple[Path, str]]:
    return [(p, str(p.relative_to(REPO))) for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]


def test_the_scanner_catches_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nfrom dill import loads\nimport torch, yaml, numpy as np\n"
                   "eval('1')\nexec('x = 1')\ntorch.load('w.pt')\nyaml.load(s, Loader=yaml.Loader)\n"
                   "np.load('a.npy', allow_pickle=True)\n__import__(name)\nmodel.eval()\n")
    found = sorted((what, line) for _, what, line in _findings(bad, "bad.py"))
    assert found == [("Loader=", 7), ("__import__(<computed name>)", 9), ("allow_pickle=", 8), ("eval()", 4),
                     ("exec()", 5), ("from dill import", 2), ("import pickle", 1), ("torch.load()", 6),
                     ("yaml.load()", 7)]


def test_no_pickle_eval_or_exec_in_the_package() -> None:
    files = _package_files()
    assert len(files) > 50  # the scan sees the whole package, not an empty folder
    found = [f for path, rel in files for f in _findings(path, rel)]
    unexpected = [f for f in found if (f[0], f[1]) not in ALLOWED]
    assert unexpected == [], "\n".join(f"{rel}:{line}: {what}" for rel, what, line in unexpected)


def test_mixture_yaml_cannot_construct_python_objects(tmp_path: Path) -> None:
    assert issubclass(_LineLoader, yaml.SafeLoader)
    marker = tmp_path / "ran"
    p = tmp_path / "mix.yaml"
    p.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nsources: {{}}\nphases: {{}}\n")
    with pytest.raises(ConfigError, match=r"invalid YAML.*python/object/apply:os\.system"):
        load_mixture(p)
    assert not marker.exists()


def _kind_of(data: bytes) -> str:
    if data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        return "parquet"
    if data[:6] == b"ARROW1":
        return "arrow"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    try:
        json.loads(data)
        return "json"
    except ValueError:
        return "other"


def test_a_build_writes_only_parquet_arrow_and_json(tmp_path: Path) -> None:
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"""
name: sec
sources:
  math: {{path: "{DATA}/limo-eval/math.jsonl", format: jsonl, kind: reasoning, category: math,
         fields: {{prompt: problem, reasoning: solution, answer: answer}}}}
phases:
  p: {{context: 1024, token_budget: 30K, weights: {{math: 1}}, shard_rows: 4}}
  rl: {{kind: prompts, prompt_budget: 20, weights: {{math: 1}}}}
""")
    out = tmp_path / "out"
    assert main(["build", str(mix), "--out", str(out), "--quiet", "--no-ray"]) == 0
    kinds: dict[str, set[str]] = {}
    for f in sorted(x for x in out.rglob("*") if x.is_file()):
        kinds.setdefault(_kind_of(f.read_bytes()), set()).add(f.suffix)
    assert kinds == {"parquet": {".parquet"}, "arrow": {".arrow"}, "json": {".json"}}
