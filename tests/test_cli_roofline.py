"""`moeprof roofline` end to end through moeprof.cli.main: JSON schema, rich output, bad input."""

from __future__ import annotations

import json

import pytest

from moeprof.cli import main

RECORD_KEYS = {"model", "gpu", "format", "batch", "experts_touched", "flops", "bytes", "t_compute_us",
               "t_memory_us", "t_roofline_us", "bound"}


def run(capsys, *args):
    rc = main(["roofline", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_defaults(capsys):
    rc, out, err = run(capsys, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert (data["model"], data["gpu"], data["tp"], data["ep"]) == ("gpt-oss-120b", "h200-sxm", 1, 1)
    assert data["formats"] == ["bf16", "fp8", "mxfp4"]
    assert data["batches"] == [2**i for i in range(15)]
    assert len(data["records"]) == 45
    for rec in data["records"]:
        assert RECORD_KEYS <= set(rec)
    # batch-1 fp8 record, derived by hand in test_models_cost.py: 99,771,876 bytes, 199,065,600 FLOPs
    r = next(r for r in data["records"] if r["format"] == "fp8" and r["batch"] == 1)
    assert r["bytes"] == pytest.approx(99_771_876) and r["flops"] == 199_065_600
    assert r["t_roofline_us"] == pytest.approx(99_771_876 / 4.8e12 * 1e6) and r["bound"] == "memory"
    cross = [c for c in data["crossover"] if {c["a"], c["b"]} == {"fp8", "mxfp4"}]
    [c] = cross
    assert {k: c[k] for k in ("a", "b", "batch", "prev_batch", "winner", "loser", "batch_exact")} == {
        "a": "fp8", "b": "mxfp4", "batch": 4096, "prev_batch": 2048, "winner": "fp8", "loser": "mxfp4",
        "batch_exact": 3418}
    # the same crossover as an interval of the table's batches with a named estimate
    assert (c["lo"], c["hi"], c["before"], c["after"], c["estimate"], c["method"]) == (
        2048, 4096, "mxfp4", "fp8", 3418, "bisection")
    assert c["text"] == "between 2048 and 4096 (estimate ~3418, bisection)"
    assert [m["format"] for m in data["memory"]] == ["bf16", "fp8", "mxfp4"]
    assert "Crossover: FP8/MXFP4 at batch 3418 (bisection between 2048 and 4096): MXFP4 faster below, FP8 from there." in data["summary"]


def test_json_options(capsys):
    rc, out, err = run(capsys, "--json", "-m", "deepseek-v3", "-g", "H100", "-f", "fp8-block,mxfp4-w4a8",
                       "-b", "1,64", "--tp", "8", "--ep", "2", "--routing", "zipf:1")
    assert rc == 0, err
    data = json.loads(out)
    assert (data["model"], data["gpu"], data["tp"], data["ep"], data["routing"]) == (
        "deepseek-v3", "h100-sxm", 8, 2, "zipf:1")
    assert {(r["format"], r["batch"]) for r in data["records"]} == {
        ("fp8-block", 1), ("fp8-block", 64), ("mxfp4-w4a8", 1), ("mxfp4-w4a8", 64)}
    # batch 1, top-8, 2 EP ranks: 8 experts touched over both ranks, 4 on the average rank
    r = next(r for r in data["records"] if r["batch"] == 1)
    assert r["experts_touched"] == pytest.approx(4.0)


def test_rich_output(capsys):
    rc, out, err = run(capsys)
    assert rc == 0, err
    for text in ("MXFP4", "FP8", "BF16", "Verdict", "Memory", "16384", "compute-bound"):
        assert text in out
    assert "FP8/MXFP4 at batch 3418" in " ".join(out.replace("│", " ").split())


def test_model_from_config_path(capsys, tmp_path):
    cfg = {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_local_experts": 8,
           "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    rc, out, err = run(capsys, "--json", "-m", str(path), "-b", "1")
    assert rc == 0, err
    rec = json.loads(out)["records"][0]
    # batch 1, top-2 of 8: 2 experts; gemm1 + gemm2 = 2*2*4096*(2*14336 + 14336) FLOPs
    assert rec["experts_touched"] == pytest.approx(2.0)
    assert rec["flops"] == 2 * 2 * 4096 * 3 * 14336


def test_list(capsys):
    rc = main(["roofline", "--list"])
    out = capsys.readouterr().out
    assert rc == 0 and "gpt-oss-120b" in out and "h200-sxm" in out and "mxfp4-w4a8" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "gpt-5"], "unknown model 'gpt-5'; valid: gpt-oss-120b, gpt-oss-20b, deepseek-v3"),
        (["-g", "a100"], "unknown GPU 'a100'; valid: h100-sxm, h100-pcie, h200-sxm, h20, b200"),
        (["-f", "bf16,int4"], "unknown format 'int4'; valid: bf16, fp8, fp8-block, mxfp4, mxfp4-w4a8"),
        (["--batch", "0"], "batch sizes must be >= 1, got '0'"),
        (["--batch", "-4"], "batch sizes must be >= 1, got '-4'"),
        (["--batch", "lots"], "bad batch 'lots'"),
        (["--batch", "64..8"], "bad batch range '64..8'"),
        (["--tp", "0"], "--tp must be a positive integer, got '0'"),
        (["--tp", "x"], "--tp must be a positive integer, got 'x'"),
        (["--tp", "7"], "tp=7 does not divide gpt-oss-120b's expert intermediate size 2880"),
        (["--ep", "3"], "ep=3 does not divide gpt-oss-120b's 128 routed experts"),
        (["--ep", "-2"], "--ep must be a positive integer, got '-2'"),
        (["--routing", "zipf:x"], "bad routing 'zipf:x'"),
        (["-m", "/no/such/config.json"], "no such config file"),
    ],
)
def test_bad_input(capsys, args, message):
    rc, out, err = run(capsys, *args)
    assert rc == 2
    assert err.startswith("moeprof: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err + out
    assert out == ""
