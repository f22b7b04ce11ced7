"""8 clients x 50 jobs against one backend (bench/load.py, the same code the figures come from)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_eight_clients_fifty_jobs_each_every_job_answered_once_to_its_owner(tmp_path):
    report = _bench().run_load(clients=8, jobs=50, workdir=tmp_path)
    assert report.errors == []
    assert report.answered == 400 and report.duplicates == 0 and report.wrong_owner == 0
    assert report.results_left_bytes == 0  # every result was released after delivery: nothing piles up
    assert report.hello_in_flight_ms is not None  # answered after all 400 jobs were sent, none collected


def test_sixteen_hosts_connecting_at_once_are_all_served(tmp_path):
    """More hosts than the guard's cap on connections that have not proved the key yet, all connecting in the
    same instant (session 12: the oldest were shut down with their signed hello unread, and those hosts
    timed out as if the backend had died)."""
    report = _bench().run_load(clients=16, jobs=10, workdir=tmp_path)
    assert report.errors == [] and report.clients_failed == 0
    assert report.answered == 160 and report.duplicates == 0 and report.wrong_owner == 0
    assert report.connections_dropped == 0


def test_a_second_run_does_not_grow_what_the_server_keeps(tmp_path):
    bench = _bench()
    first = bench.run_load(clients=4, jobs=30, workdir=tmp_path / "a")
    second = bench.run_load(clients=4, jobs=30, workdir=tmp_path / "b")
    assert first.answered == second.answered == 120
    assert first.results_left_bytes == second.results_left_bytes == 0
