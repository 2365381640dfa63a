"""Print the table of shipped assets for benchmarks/RESULTS.md, from their meta.json alone.

    python benchmarks/assets_table.py
"""
from __future__ import annotations

from gptlib import assets


def headline(metrics: dict) -> str:
    """The first few scalar metrics, compactly."""
    out = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value:,}")
        if len(out) == 3:
            break
    return ", ".join(out) or "(see meta.json)"


def main() -> None:
    print("| asset | command | wall time | machine | headline metrics |")
    print("|---|---|---|---|---|")
    for name in assets.names():
        meta = assets.read_meta(name)
        print(f"| `{name}` | `{meta['command']}` | {meta['wall_s']:.0f} s | {meta['machine']} "
              f"| {headline(meta['metrics'])} |")


if __name__ == "__main__":
    main()
