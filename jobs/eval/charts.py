"""The compare chart: per-question outcomes of both arms, and the gain with its CI."""

from __future__ import annotations

from pathlib import Path


def compare_chart(path: Path, questions: list[str], base: list[float], cand: list[float], delta: float,
                  ci: tuple[float, float], min_delta: float, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, len(questions) * 0.32), 6.5),
                                      gridspec_kw={"height_ratios": [3, 1.2]})
    x = range(len(questions))
    top.bar([i - 0.2 for i in x], base, width=0.4, label="baseline", color="#9aa5b1")
    top.bar([i + 0.2 for i in x], cand, width=0.4, label="candidate", color="#2f80ed")
    for i, (b, c) in enumerate(zip(base, cand)):
        if b >= 0.5 > c:
            top.annotate("regressed", (i, 1.02), ha="center", fontsize=7, color="#d64545", rotation=90)
    top.set_xticks(list(x), questions, rotation=90, fontsize=7)
    top.set_ylim(0, 1.25)
    top.set_ylabel("pass share over repeats")
    top.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    top.set_title(title, fontsize=10, loc="left", pad=18)
    bottom.errorbar([delta], [0], xerr=[[delta - ci[0]], [ci[1] - delta]], fmt="o", color="#2f80ed", capsize=6)
    bottom.axvline(0, color="#444", lw=1)
    bottom.axvline(min_delta, color="#d64545", lw=1, ls="--", label=f"min_delta {min_delta:+.2f}")
    bottom.set_yticks([])
    bottom.set_xlim(min(-0.5, ci[0] - 0.05), max(0.5, ci[1] + 0.05))
    bottom.set_xlabel(f"pass-rate gain {delta:+.3f}, CI [{ci[0]:+.3f}, {ci[1]:+.3f}]")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
