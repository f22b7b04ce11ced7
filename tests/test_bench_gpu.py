"""bench/gpu.py --tiny: the GPU check's plumbing on a CPU (what CI runs); no timing is asserted."""

from __future__ import annotations

import json


def test_gpu_bench_tiny_mode_writes_json_and_table(tmp_path):
    from bench import gpu

    result = gpu.main(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "gpu.json").read_text())
    table = (tmp_path / "gpu.md").read_text()
    assert data["tiny"] is True and data["device"] == "cpu" and result["config"] == data["config"]
    im = data["imagic"]
    assert [q["cache_hit"] for q in im["later"]] == [True] * 5 and im["batched_cache_hit"]
    assert im["first_s"] > 0 and im["eta_s"] > 0 and im["plain_s"] > 0 and im["peak_vram_gb"] is None
    assert im["first_info"]["gradient_checkpointing_why"].startswith("auto")
    assert im["preview"].startswith("ddim")
    assert data["replace"]["raw_s"] > 0 and data["replace"]["replace_s"] > 0
    assert "skipped" in data["erase"] or {"lama", "migan"} <= data["erase"].keys()
    assert "| Imagic first request" in table and "| Replace" in table and "<= 20 s" in table


def test_gpu_bench_a_failing_part_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    """A GPU lease is one short shot: a part that breaks must not lose the figures of the other parts."""
    from bench import gpu

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu, "bench_replace", broken)
    gpu.main(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "gpu.json").read_text())
    table = (tmp_path / "gpu.md").read_text()
    assert "illegal memory access" in data["replace"]["error"]
    assert data["imagic"]["first_s"] > 0 and ("skipped" in data["erase"] or "lama" in data["erase"])
    assert "| replace | failed: RuntimeError: CUDA error" in table and "| Imagic first request" in table
