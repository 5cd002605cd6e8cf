"""The benchmarks' own pieces that a wrong figure would come from (the benchmarks themselves
run with `make bench`, not in the test suite)."""

from __future__ import annotations

import json

from bench.perf_bench import CORES, Measured, bench_rows, last_lines, limit, ratio


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


def test_a_failure_shows_its_cause_not_the_progress_bars_after_it():
    bars = "".join(f"\r  [shard 1] Evaluating:  {p}%|{'#' * (p // 10)}| {p}/100 [Elapsed: 00:0{p // 50}]" for p in range(0, 101))
    out = f"  [shard 0] Traceback (most recent call last):\n  [shard 0] RuntimeError: database is locked\n{bars}\nerror: shard(s) 0 of 2 failed\n"
    assert last_lines(out, 3).splitlines() == ["  [shard 0] Traceback (most recent call last):",
                                               "  [shard 0] RuntimeError: database is locked", "error: shard(s) 0 of 2 failed"]


GATE_ARGS = ["--aa-sims", "20", "--power-sims", "10", "--bootstrap", "50",
             "--gated-aa-sims", "20", "--gated-power-sims", "10", "--gated-bootstrap", "50",
             "--seq-aa-sims", "20", "--seq-power-sims", "10"]


def test_bench_gate_prints_both_designs_and_exits_0_when_aa_holds(capsys):
    from bench.gate_bench import main

    rc = main(GATE_ARGS)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("Default gate:") and "\nGated design: the default gate + hard_gates on Safety" in out
    assert "slices injection (8 questions, topic=injection)" in out and "refunds (6 questions, topic=refunds)" in out
    assert "Why Holm on the no-regression tests:" in out
    gated = out.split("\nGated design:")[1].split("\nSequential design")[0]
    rows = [line.split() for line in gated.splitlines() if line.strip().startswith(("A/A", "+"))]
    assert [r[:3] for r in rows] == [["A/A", "+0", "40"], ["+10", "pts", "40"], ["+20", "pts", "40"], ["+30", "pts", "40"]]
    assert [r[3] for r in rows] == ["20", "10", "10", "10"]  # each figure with its number of simulations
    assert "false promotion <= alpha: yes;  power at +20 pts >= 0.80:" in gated
    assert "good candidates (+20) refused by a no-regression gate <= regression_alpha:" in gated
    seq = out.split("\nSequential design (jobs.eval.sequential):")[1]
    assert "Lan-DeMets O'Brien-Fleming-type spending of the two-sided alpha 0.05" in seq
    looks = [line.split() for line in seq.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in looks] == ["1", "2", "3", "4", "5"] and looks[-1][1:3] == ["100%", "0.050000"]
    rows = [line.split() for line in seq.splitlines() if line.strip().startswith(("A/A", "+", "mean"))]
    assert [r[:4] for r in rows[:4]] == [["A/A", "+0", "40", "20"], ["+10", "pts", "40", "10"],
                                         ["+20", "pts", "40", "10"], ["+30", "pts", "40", "10"]]
    assert rows[4][0] == "mean" and 0 < float(rows[4][1]) <= 1  # the rows share over the four
    first = [line.split() for line in out.split("\nGated design:")[0].splitlines() if line.strip().startswith(("A/A", "+"))]
    assert [r[4] for r in rows[:4]] == [r[4] for r in first]  # same seeds and counts: the first table's decisions
    assert "A/A false promotions <= alpha 0.05: fixed yes, sequential yes;  power at +20 pts >= 0.80 on 40 questions:" in seq
    assert "average rows share <= 0.6:" in seq


def test_bench_gate_exits_1_when_the_sequential_designs_aa_rate_exceeds_alpha(capsys, monkeypatch):
    import bench.gate_bench as bench

    real = bench.sequential_rates

    def aa_fails(n_sims, seed, **kw):
        figures = real(n_sims, seed, **kw)
        return {**figures, "sequential": 1.0} if kw["gain"] == 0 else figures

    monkeypatch.setattr(bench, "sequential_rates", aa_fails)
    assert bench.main(GATE_ARGS) == 1
    assert "fixed yes, sequential NO" in capsys.readouterr().out.split("\nSequential design")[1]


def test_bench_gate_exits_1_when_the_gated_designs_aa_rate_exceeds_alpha(capsys, monkeypatch):
    import bench.gate_bench as bench

    monkeypatch.setattr(bench, "gated_rates", lambda n_sims, seed, **kw: (1.0, 0.0, 0.0))
    assert bench.main(GATE_ARGS) == 1
    assert "false promotion <= alpha: NO" in capsys.readouterr().out.split("\nGated design:")[1]
