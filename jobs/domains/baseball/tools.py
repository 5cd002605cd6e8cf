"""Tools of the baseball hitting assistant: pitcher tendencies and matchup history.

They read the synthetic CSVs in ``data/baseball`` (or ``PROMPTGATE_BASEBALL_DATA``) and
return JSON text. An unknown name returns an ``error`` the agent can read, never a crash.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Annotated

DATA_DIR = Path(os.environ.get("PROMPTGATE_BASEBALL_DATA", Path(__file__).resolve().parents[3] / "data" / "baseball"))
SMALL_PITCHES = 30  # fewer pitches than this is a small sample
SMALL_PA = 10  # fewer plate appearances than this is a small sample


@lru_cache(maxsize=1)
def _tables() -> tuple[dict, dict, list[str], list[str]]:
    mix: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    with open(DATA_DIR / "pitch_mix.csv", newline="") as f:
        for r in csv.DictReader(f):
            mix[(r["pitcher"].lower(), r["batter_hand"], r["count"])].append(r)
    matchups: dict[tuple[str, str], dict] = {}
    with open(DATA_DIR / "matchups.csv", newline="") as f:
        for r in csv.DictReader(f):
            matchups[(r["batter"].lower(), r["pitcher"].lower())] = r
    pitchers = sorted({r[0]["pitcher"] for r in mix.values()})
    batters = sorted({r["batter"] for r in matchups.values()})
    return mix, matchups, pitchers, batters


def _unknown(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6) or known[:3]
    return json.dumps({"error": f"No {kind} named '{name}' in the data. Did you mean: {', '.join(close)}?"})


def pitcher_tendency(
    pitcher: Annotated[str, "the pitcher's full name as written in the question"],
    batter_hand: Annotated[str, "which side the batter hits from, one of: left, right"],
    count: Annotated[str | None, "the ball-strike count, e.g. 0-2; leave empty for all counts"] = None,
) -> str:
    """Pitch mix a pitcher throws to left- or right-handed batters, optionally in one count."""
    mix, _m, pitchers, _b = _tables()
    hand = (batter_hand or "").strip()[:1].upper()
    if hand not in ("L", "R"):
        return json.dumps({"error": f"batter_hand must be 'left' or 'right', not '{batter_hand}'."})
    key = (pitcher or "").strip().lower()
    if not any(k[0] == key for k in mix):
        return _unknown("pitcher", pitcher, pitchers)
    counts = [count.strip()] if count else sorted({k[2] for k in mix if k[0] == key})
    rows = [r for c in counts for r in mix.get((key, hand, c), [])]
    if not rows:
        return json.dumps({"error": f"No data for {pitcher} in a {count} count."})
    shares: dict[str, float] = defaultdict(float)
    sizes = {}
    for r in rows:
        shares[r["pitch"]] += float(r["share"]) * int(r["pitches"])
        sizes[r["count"]] = int(r["pitches"])
    n = sum(sizes.values())
    ranked = sorted(((p, s / n) for p, s in shares.items()), key=lambda x: -x[1])
    side = "left" if hand == "L" else "right"
    where = f" in {count} counts" if count else ""
    mix_text = ", ".join(f"{p} {s:.0%}" for p, s in ranked)
    top = ranked[0][0]
    return json.dumps({
        "summary": f"Against {side}-handed hitters{where}, {rows[0]['pitcher']} throws {mix_text}",
        "sample_size": n,
        "sample_unit": "pitches",
        "small_sample": n < SMALL_PITCHES,
        "advice": f"look for the {top} and be ready to attack it early",
    })


def matchup_history(
    batter: Annotated[str, "the batter's full name as written in the question"],
    pitcher: Annotated[str, "the pitcher's full name as written in the question"],
) -> str:
    """A batter's career line against one pitcher."""
    mix, matchups, pitchers, batters = _tables()
    b, p = (batter or "").strip().lower(), (pitcher or "").strip().lower()
    if b not in {k[0] for k in matchups}:
        return _unknown("batter", batter, batters)
    if p not in {k[0] for k in mix}:
        return _unknown("pitcher", pitcher, pitchers)
    r = matchups.get((b, p))
    if r is None:
        return json.dumps({"error": f"{batter} has never faced {pitcher} in the data."})
    pa, ab, h = int(r["plate_appearances"]), int(r["at_bats"]), int(r["hits"])
    avg = f"{h / ab:.3f}".lstrip("0") if ab else "---"
    good = ab and h / ab >= 0.280
    return json.dumps({
        "summary": (f"{r['batter']} is {h}-for-{ab} ({avg}) against {r['pitcher']} with "
                    f"{r['home_runs']} home runs, {r['strikeouts']} strikeouts and {r['walks']} walks"),
        "sample_size": pa,
        "sample_unit": "plate appearances",
        "small_sample": pa < SMALL_PA,
        "advice": "stay aggressive early in the count, he has seen this pitcher well" if good
        else "work the count and make him throw strikes",
    })


TOOLS = [pitcher_tendency, matchup_history]
