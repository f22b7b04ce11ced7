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
