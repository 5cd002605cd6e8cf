"""The benchmarks' own pieces that a wrong figure would come from (the benchmarks themselves
run with `make bench`, not in the test suite)."""

from __future__ import annotations

import json

from bench.perf_bench import CORES, Measured, bench_rows, limit, ratio


def test_bench_rows_are_distinct_questions_with_the_domains_fields(tmp_path):
    rows = [json.loads(line) for line in bench_rows(tmp_path / "rows.jsonl", 200).read_text().splitlines()]
    assert len(rows) == 200 and len({r["id"] for r in rows}) == 200
    assert len({r["inputs"]["question"] for r in rows}) == 200  # evaluate matches rows back by their inputs
    assert all(r.get("expectations") for r in rows)


def test_the_named_limit_follows_the_measured_load():
    assert "cores" in limit(Measured(10, server_cores=0.5, stage_cores=1.2, machine_cores=0.95 * CORES)).split("(")[0]
    assert limit(Measured(10, server_cores=0.9, stage_cores=0.4, machine_cores=0.6 * CORES)).startswith("the tracking server")
    assert limit(Measured(10, server_cores=0.2, stage_cores=0.3, machine_cores=0.3 * CORES)).startswith("waiting")
    assert ratio(3, 2) == "1.50x" and ratio(1, 0) == "n/a"
