"""Time spent in work no LLM gateway sees (a domain's tool calls), counted per process so a
stage can report it next to the gateway's per-kind LLM figures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

KINDS = ("agent", "tools", "judge", "reflection", "embeddings")  # the span kinds a stage reports, in print order
FIGURES = ("calls", "seconds", "tokens", "usd")
_lock = threading.Lock()
_counts: dict[str, dict[str, float]] = {}


def record(kind: str, seconds: float) -> None:
    with _lock:
        entry = _counts.setdefault(kind, {"calls": 0.0, "seconds": 0.0})
        entry["calls"] += 1
        entry["seconds"] += seconds


def timed(kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its calls counted and timed under ``kind`` (signature and annotations kept)."""

    @wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record(kind, time.perf_counter() - start)

    return call


def snapshot() -> dict[str, dict[str, float]]:
    with _lock:
        return {k: dict(v) for k, v in _counts.items()}


def metrics(by_kind: dict[str, dict[str, float]]) -> dict[str, float]:
    """``span.<kind>.<figure>`` run metrics."""
    return {f"span.{k}.{f}": float(v) for k, figs in by_kind.items() for f, v in figs.items()}


def from_metrics(metric_maps: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per-kind figures added up from several runs' ``span.*`` metrics."""
    return add(*[{kind: {figure: value}} for m in metric_maps for key, value in m.items() if key.startswith("span.")
                 for _, kind, figure in [key.split(".", 2)]])


def add(*maps: dict[str, dict[str, float]] | None) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for m in maps:
        for kind, figs in (m or {}).items():
            for figure, value in figs.items():
                out.setdefault(kind, {})[figure] = out.get(kind, {}).get(figure, 0.0) + float(value)
    return out


def line(by_kind: dict[str, dict[str, float]]) -> str:
    """``agent 12.1 s in 240 calls, 51k tokens, $0.0120 · tools 0.3 s in 310 calls · ...``"""
    parts = []
    for kind in [k for k in KINDS if k in by_kind] + sorted(set(by_kind) - set(KINDS)):
        f = by_kind[kind]
        text = f"{kind} {f.get('seconds', 0):.1f} s in {int(f.get('calls', 0))} calls"
        if f.get("tokens"):
            text += f", {int(f['tokens'])} tokens, ${f.get('usd', 0):.4f}"
        parts.append(text)
    return " · ".join(parts)


def table(by_kind: dict[str, dict[str, float]]) -> list[str]:
    """Where the pipeline's call time and money went, a row per kind with its shares. Seconds
    are summed over calls, so concurrent calls count each (a cached call costs next to none)."""
    total_s = sum(f.get("seconds", 0.0) for f in by_kind.values()) or 1.0
    total_usd = sum(f.get("usd", 0.0) for f in by_kind.values()) or 1.0
    rows = ["where the time and money went (call seconds summed over calls):",
            f"   {'kind':<11} {'calls':>7} {'seconds':>9} {'share':>6} {'tokens':>9} {'USD':>9} {'share':>6}"]
    for kind in [k for k in KINDS if k in by_kind] + sorted(set(by_kind) - set(KINDS)):
        f = by_kind[kind]
        rows.append(f"   {kind:<11} {int(f.get('calls', 0)):>7} {f.get('seconds', 0):>9.1f} "
                    f"{f.get('seconds', 0) / total_s:>6.0%} {int(f.get('tokens', 0)):>9} {f.get('usd', 0):>9.4f} "
                    f"{f.get('usd', 0) / total_usd:>6.0%}")
    return rows
