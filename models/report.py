"""The evaluation report: ``metrics.json`` (every figure), ``report.md`` (tables, protocol, data, seeds) and PNG
plots (metrics per model, NDCG@10 by user activity, catalog coverage)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models.paired_bootstrap import BOOTSTRAP, CONFIDENCE
from streamrec.errors import UserError


def write_report(out_dir: Path, summary: dict) -> list[Path]:
    """Write the report files for an ``models.evaluate.evaluate`` summary; returns their paths."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create report directory {out_dir}: {e.strerror}") from None
    metrics = out_dir / "metrics.json"
    metrics.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    plots = plot_metrics(out_dir, summary) + plot_activity(out_dir, summary) + plot_coverage(out_dir, summary)
    report = out_dir / "report.md"
    report.write_text(markdown(summary, [p.name for p in plots]), encoding="utf-8")
    return [report, metrics, *plots]


def metric_names(block: dict) -> list[str]:
    """The protocol's @k metrics in the order its first model reports them."""
    first = next(iter(block["models"].values()))
    return [m for m, v in first.items() if m.endswith(f"@{block['k']}") and isinstance(v, float)]


def markdown(summary: dict, plots: list[str]) -> str:
    data = summary["dataset"]
    lines = [
        f"# Offline evaluation: {data['name']}",
        "",
        f"Data: `{data['events_path']}` ({data['events']} events, {data['users']} users, {data['positives']} "
        f"positives) with catalog `{data['items_path']}` ({data['catalog_items']} items); sha256 (first 16 hex) "
        f"events `{data['sha256_16']['events']}`, items `{data['sha256_16']['items']}`.",
        "",
        "A positive is a user's first watch of an item; clicks are interactions but not positives. Wide & Deep "
        "trains on the split's train positives, each with "
        f"{summary['negatives_per_positive']} sampled items the user had not touched by then, the item popularity "
        "feature counted on the train positives, features joined point-in-time from Feast; it scores a test user "
        "as of a context pick (loo: the held-out pick; full: the first test pick), "
        "with features from strictly before it. `wide-deep-no-live` has no context or session features.",
        "",
        f"Seeds {', '.join(map(str, summary['seeds']))} (splits, negatives, every trained model); each figure is "
        "the mean over seeds" + (", ± its standard deviation over seeds" if len(summary["seeds"]) > 1 else "")
        + ". Wide & Deep: "
        + ", ".join(f"{k}={v}" for k, v in summary["wide_deep_config"].items())
        + ". Session features: " + ", ".join(f"{k}={v}" for k, v in summary["feature_config"].items()) + ".",
    ]
    several = len(summary["seeds"]) > 1
    pooled = "users × seeds" if several else "users"  # what a count of the pooled per-user rows means
    for protocol, block in summary["protocols"].items():
        names = metric_names(block)
        split = block["split"]
        lines += [
            "",
            f"## Protocol `{protocol}`",
            "",
            f"{block['description']}. Split: {split['users']} users, {split['items']} items, "
            f"{split['train_positives']} train positives.",
            "",
            "| model | " + " | ".join(names) + " | users |",
            "|---|" + "---:|" * (len(names) + 1),
        ]
        for model, figures in block["models"].items():
            spread = block["spread"][model]
            values = " | ".join(f"{figures[m]:.4f}" + (f" ± {spread[m]:.4f}" if several else "") for m in names)
            lines.append(f"| {model} | {values} | {figures['n_users']} |")
        lines += _versus_best(block, pooled)
        skipped = next(iter(block["models"].values()))["skipped"]
        lines += ["", "Users not tested: " + (", ".join(f"{k} {v}" for k, v in skipped.items()) or "none") + "."]
        metric = f"ndcg@{block['k']}"
        tables = block[f"{metric}_by_activity"]
        first = next(iter(tables.values()))
        lines += ["", f"{metric.upper()} by train positives per user:", "",
                  "| model | " + " | ".join(f"{b} ({first[b]['users']} {pooled})" for b in first) + " |",
                  "|---|" + "---:|" * len(first)]
        for model, table in tables.items():
            lines.append(f"| {model} | " + " | ".join(f"{table[b][metric]:.4f}" for b in first) + " |")
    lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots]
    seconds = summary.get("seconds", {})
    lines += ["", "## Wall time (s)", "", "```", json.dumps(seconds, indent=1), "```", ""]
    return "\n".join(lines)


def _versus_best(block: dict, pooled: str) -> list[str]:
    """Each model's paired NDCG@k difference to the best baseline with its CI, overall and, for Wide &
    Deep, per activity bucket (``pooled``: what a bucket counts, users or users × seeds)."""
    best = block.get("best_baseline")
    if best is None:
        return []
    metric = f"NDCG@{block['k']}"
    intro = (f"Paired difference in {metric} to the best baseline, **{best}** (users resampled within seeds, "
             f"{BOOTSTRAP:,} replicates; {CONFIDENCE:.0%} CI):")
    ci = f"{CONFIDENCE:.0%} CI"
    lines = ["", intro, "", f"| model | difference | {ci} | relative |", "|---|---:|---:|---:|"]
    for model, f in block["vs_best_baseline"].items():
        lines.append(f"| {model} | {f['diff']:+.4f} | [{f['diff_ci'][0]:+.4f}, {f['diff_ci'][1]:+.4f}] | "
                     + ("–" if f["relative"] is None else f"{f['relative']:+.1%}") + " |")
    for model, groups in block.get("vs_best_baseline_by_activity", {}).items():
        lines += ["", f"{model} − {best} by train positives per user:", "",
                  f"| train positives | {pooled} | difference | {ci} |", "|---|---:|---:|---:|"]
        for bucket, f in groups.items():
            lines.append(f"| {bucket} | {f['sessions']} | {f['diff']:+.4f} | "
                         f"[{f['diff_ci'][0]:+.4f}, {f['diff_ci'][1]:+.4f}] |")
    return lines


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(ax, groups: list[str], series: dict[str, list[float]],
                 errors: dict[str, list[float]] | None = None) -> None:
    """Bars per group and series; ``errors``: a ± bar per value (the spread over seeds)."""
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for n, (label, values) in enumerate(series.items()):
        ax.bar(x + (n - (len(series) - 1) / 2) * width, values, width, label=label,
               yerr=None if errors is None else errors[label], capsize=2)
    ax.set_xticks(x, groups)
    ax.grid(axis="y", alpha=0.3)


def plot_metrics(out_dir: Path, summary: dict) -> list[Path]:
    plt = pyplot()
    paths = []
    for protocol, block in summary["protocols"].items():
        names = metric_names(block)
        fig, ax = plt.subplots(figsize=(1.6 * len(names) + 4, 4))
        grouped_bars(ax, names, {m: [f[n] for n in names] for m, f in block["models"].items()},
                     {m: [block["spread"][m][n] for n in names] for m in block["models"]})
        ax.set_title(f"{summary['dataset']['name']}: {protocol}")
        ax.legend(fontsize="small")
        path = out_dir / f"metrics_{protocol}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_activity(out_dir: Path, summary: dict) -> list[Path]:
    plt = pyplot()
    blocks = summary["protocols"]
    fig, axes = plt.subplots(1, len(blocks), figsize=(7 * len(blocks), 4), squeeze=False)
    for ax, (protocol, block) in zip(axes[0], blocks.items()):
        metric = f"ndcg@{block['k']}"
        tables = block[f"{metric}_by_activity"]
        buckets = list(next(iter(tables.values())))
        grouped_bars(ax, buckets, {m: [t[b][metric] for b in buckets] for m, t in tables.items()})
        ax.set_title(f"{protocol}: {metric.upper()} by train positives per user")
        ax.set_xlabel("train positives")
        ax.legend(fontsize="small")
    path = out_dir / "ndcg_by_activity.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def plot_coverage(out_dir: Path, summary: dict) -> list[Path]:
    """Catalog coverage per model; only full ranking measures it (leave-last-out ranks 100 given items)."""
    block = summary["protocols"].get("full")
    if block is None:
        return []
    plt = pyplot()
    metric = f"coverage@{block['k']}"
    models = list(block["models"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(models, [block["models"][m][metric] for m in models])
    ax.set_ylabel(f"share of the catalog in some top {block['k']}")
    ax.set_title(f"{summary['dataset']['name']}: {metric} (full)")
    ax.tick_params(axis="x", rotation=20)
    ax.grid(axis="y", alpha=0.3)
    path = out_dir / "coverage.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
