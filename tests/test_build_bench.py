"""`firespotter build` (hit, tamper refusal) and `firespotter bench` (JSON keys), run in-process on the real model."""

from __future__ import annotations

import json

import pytest

from firespotter.runtime.cli import main


def cli(capsys, *args) -> tuple[int, str, str]:
    try:
        main(list(args))
        rc = 0
    except SystemExit as exc:
        rc = exc.code or 0
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FIRESPOTTER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_build_then_hit_then_tamper_is_refused(capsys, cache_dir, tmp_path):
    args = ("build", "--model", "fireseg-lite", "--backend", "onnxruntime", "--precision", "fp16")
    rc, out, err = cli(capsys, *args, "--json", str(tmp_path / "b1.json"))
    assert rc == 0, err
    first = json.loads((tmp_path / "b1.json").read_text())
    art = first["artifact"]
    assert art["hit"] is False and "built in" in out and f"artifact  {art['dir']}" in out
    assert "building fireseg-lite" in err and str(cache_dir) in art["dir"]
    assert first["precision_exec"] == "fp16" and first["weight_bits"] == 16 and first["simulated"] is False

    rc, out, err = cli(capsys, *args, "--json", str(tmp_path / "b2.json"))
    assert rc == 0, err
    second = json.loads((tmp_path / "b2.json").read_text())["artifact"]
    assert second["hit"] is True and second["dir"] == art["dir"] and "cache     hit" in out
    assert "building" not in err  # nothing rebuilt

    onnx = next(p for p in (cache_dir.glob("*/*/model.onnx")))
    data = bytearray(onnx.read_bytes())
    data[len(data) // 3] ^= 0x01  # one bit of one byte
    onnx.write_bytes(bytes(data))
    rc, out, err = cli(capsys, *args)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: artifact file ")
    assert str(onnx) in lines[0] and "does not match its manifest" in lines[0] and "--rebuild" in lines[0]


def test_build_fp32_says_nothing_to_build_and_tensorrt_fails_in_one_line(capsys, cache_dir):
    rc, out, err = cli(capsys, "build", "--model", "fireseg-lite", "--backend", "onnxruntime")
    assert rc == 0 and "runs the model file itself" in out and "nothing to build" in out
    from firespotter.plugins.backends.tensorrt_backend import available

    if available():
        pytest.skip("TensorRT is available here")
    rc, out, err = cli(capsys, "build", "--model", "fireseg-lite", "--backend", "tensorrt", "--precision", "fp16")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "backend 'tensorrt'" in lines[0] and "not installed" in lines[0]
    assert "Jetson" in lines[0]


def test_bench_writes_the_documented_json(capsys, cache_dir, tmp_path):
    path = tmp_path / "b.json"
    rc, out, err = cli(capsys, "bench", "--model", "fireseg-lite", "--backend", "onnxruntime", "--precision", "fp32",
                       "--size", "96x64", "--batch", "1,2", "--frames", "2", "--warmup", "1", "--json", str(path))
    assert rc == 0, err
    d = json.loads(path.read_text())
    for key in ("model", "backend", "precision_exec", "weight_bits", "simulated", "size", "latency_ms", "fps",
                "batches", "peak_rss_mib", "machine", "versions"):
        assert key in d, key
    assert d["model"] == "fireseg-lite" and d["backend"] == "onnxruntime" and d["size"] == "96x64"
    assert (d["precision_exec"], d["weight_bits"], d["simulated"]) == ("fp32", 32, False)
    assert set(d["latency_ms"]) >= {"p50", "p95", "p99"} and d["latency_ms"]["p50"] <= d["latency_ms"]["p99"]
    assert [b["batch"] for b in d["batches"]] == [1, 2] and all(b["fps"] > 0 and b["calls"] == 2 for b in d["batches"])
    assert d["peak_rss_mib"] > 0 and d["cuda_memory"] is None
    assert "p50 ms" in out and "fp32" in out


def test_bench_rejects_bad_batches(capsys, cache_dir):
    rc, out, err = cli(capsys, "bench", "--model", "fireseg-lite", "--backend", "onnxruntime", "--batch", "1,x")
    assert rc == 2 and "--batch '1,x'" in err and len(err.strip().splitlines()) == 1


def test_gpu_check_dry_runs_on_the_cpu(tmp_path, real_dev):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is here: run bench/gpu_check.py for real")
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "gc.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--no-compile",
                        "--data", str(real_dev), "--frames", "2", "--iters", "1", "--warmup", "0", "--size", "32",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "dry run on the CPU (no CUDA here" in r.stdout and "IoU/fp32" in r.stdout
    d = json.loads(out.read_text())
    assert d["dry_run"] is True and d["frames"] == 2
    rows = {v["variant"]: v for v in d["variants"]}
    assert list(rows) == ["fp32", "fp32-cl", "amp-bf16-cl"]
    assert rows["fp32"]["iou_vs_fp32"] == 1.0 and rows["fp32"]["max_abs_dprob"] == 0.0
    assert rows["amp-bf16-cl"]["precision_exec"] == "bf16" and rows["amp-bf16-cl"]["simulated"] is False
    assert all(0.0 <= v["iou_vs_fp32"] <= 1.0 and v["p50_ms"] > 0 for v in rows.values())
