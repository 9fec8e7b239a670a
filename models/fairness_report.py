"""The fairness audit's report: ``fairness.json`` (every figure), ``fairness.md`` (tables with CIs) and PNG plots
(quality by user group, exposure by popularity decile, the re-rank's accuracy/exposure trade-off)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models.report import grouped_bars, pyplot
from streamrec.errors import UserError


def write_fairness_report(out_dir: Path, summary: dict) -> list[Path]:
    """Write the report files for a ``models.fairness_audit.audit`` summary; returns their paths."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create report directory {out_dir}: {e.strerror}") from None
    figures = out_dir / "fairness.json"
    figures.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    plots = [plot_quality(out_dir, summary), plot_exposure(out_dir, summary)]
    if summary["mitigation"]["runs"]:
        plots.append(plot_tradeoff(out_dir, summary))
    report = out_dir / "fairness.md"
    report.write_text(markdown(summary, [p.name for p in plots]), encoding="utf-8")
    return [report, figures, *plots]


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "–" if x is None else format(x, fmt)


def _ci(pair: list | None, fmt: str = ".4f") -> str:
    return "–" if pair is None or None in pair else f"[{pair[0]:{fmt}}, {pair[1]:{fmt}}]"


def _disparity(quality: dict) -> str:
    return "–" if quality["disparity"] is None else _num(quality["disparity"]["ratio"], ".3f")


def _low_share(exposure: dict, half: int = 5) -> float:
    """Exposure share of the less popular half of the catalog (D1..D5)."""
    return sum(g["exposure_share"] for g in list(exposure["groups"].values())[:half])


def headline_rows(summary: dict) -> list[str]:
    """The summary table: per grouping the worst/best group ratio of NDCG@k and HR@k, and exposure's."""
    k, base = summary["k"], summary["base"]
    ndcg, hr = f"ndcg@{k}", f"hr@{k}"
    lines = [f"| grouping | groups | NDCG@{k} worst / best [95 % CI] | worst → best | HR@{k} worst / best "
             "[95 % CI] |", "|---|---:|---:|---|---:|"]
    for name in summary["groupings"]:
        q, h = base["quality"][ndcg]["by"][name], base["quality"][hr]["by"][name]
        d, dh = q["disparity"], h["disparity"]
        lines.append(f"| users by {name} | {len(q['groups'])} | "
                     + ("–" if d is None else f"{_num(d['ratio'], '.3f')} {_ci(d['ci'], '.3f')}") + " | "
                     + ("–" if d is None else f"{d['worst']} → {d['best']}") + " | "
                     + ("–" if dh is None else f"{_num(dh['ratio'], '.3f')} {_ci(dh['ci'], '.3f')}") + " |")
    e, d = base["exposure"]["disparity"], base["exposure"]["distance"]
    lines.append(f"| items by popularity decile (exposure / catalog share) | {len(base['exposure']['groups'])} | "
                 f"{_num(e['ratio'], '.3f')} {_ci(e['ci'], '.3f')} | {e['worst']} → {e['best']} | "
                 f"distance from parity {d['value']:.3f} {_ci(d['ci'], '.3f')} |")
    return lines


def mitigation_rows(summary: dict) -> list[str]:
    """Per re-rank strength (0: none) NDCG@k and HR@k with the paired cost, exposure disparity and D1–D5 share."""
    k, base = summary["k"], summary["base"]
    ndcg, hr = f"ndcg@{k}", f"hr@{k}"
    lines = [f"| strength | NDCG@{k} | Δ NDCG@{k} [95 % CI] | HR@{k} | Δ HR@{k} [95 % CI] | exposure disparity "
             "[95 % CI] | distance from parity [95 % CI] | D1–D5 share of slots |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    runs = {"0": base} | summary["mitigation"]["runs"]
    for strength, run in runs.items():
        cost = run.get("cost")
        delta = {m: "–" if cost is None else
                 f"{cost[m]['diff']:+.4f} {_ci(cost[m]['diff_ci'], '+.4f')} ({_num(cost[m]['relative'], '+.1%')})"
                 for m in (ndcg, hr)}
        e, d = run["exposure"]["disparity"], run["exposure"]["distance"]
        lines.append(f"| {strength} | {run['quality'][ndcg]['overall']:.4f} | {delta[ndcg]} | "
                     f"{run['quality'][hr]['overall']:.4f} | {delta[hr]} | {_num(e['ratio'], '.3f')} "
                     f"{_ci(e['ci'], '.3f')} | {d['value']:.3f} {_ci(d['ci'], '.3f')} | "
                     f"{_low_share(run['exposure']):.1%} |")
    return lines


def markdown(summary: dict, plots: list[str]) -> str:
    k, base, data = summary["k"], summary["base"], summary["dataset"]
    lines = [
        f"# Fairness audit: {summary['model']} on {data['name']}",
        "",
        f"Data: `{data['events_path']}` ({data['users']} users, {data['items']} items, {data['train_positives']} "
        f"train positives); {summary['tested_users']} users tested, skipped: "
        + (", ".join(f"{r} {n}" for r, n in summary["skipped"].items()) or "none") + f". Seed {summary['seed']}.",
        "",
        f"Protocol: {summary['protocol']}. CIs: {summary['confidence']:.0%} percentile bootstrap, "
        f"{summary['bootstrap']:,} replicates (quality: users resampled within their group; exposure: users' lists "
        f"resampled). Groups of fewer than {summary['min_group_users']} users are listed without ratios. "
        "Disparity = worst group / best group (1 = parity); ratio to all = group mean / all users' mean; "
        "exposure ratio = a decile's share of top-10 slots / its share of the catalog (D1: least popular).",
        "",
        "## Summary",
        "",
        *headline_rows(summary),
    ]
    for metric in (f"ndcg@{k}", f"hr@{k}"):
        block = base["quality"][metric]
        lines += ["", f"## {metric.upper()} by user group (all users: {block['overall']:.4f})"]
        for name, q in block["by"].items():
            lines += ["", f"By {name}:", "", f"| {name} | users | {metric.upper()} | 95 % CI | ratio to all | "
                      "95 % CI |", "|---|---:|---:|---:|---:|---:|"]
            for group, g in q["groups"].items():
                lines.append(f"| {group} | {g['users']} | {g['mean']:.4f} | {_ci(g['mean_ci'])} | "
                             f"{_num(g['ratio_to_all'], '.3f')} | {_ci(g['ratio_to_all_ci'], '.3f')} |")
    e = base["exposure"]
    lines += ["", f"## Exposure by popularity decile ({e['slots']:,} top-{k} slots)", "",
              "| decile | catalog share | train-positive share | exposure share | 95 % CI | exposure / catalog | "
              "95 % CI |", "|---|---:|---:|---:|---:|---:|---:|"]
    for group, g in e["groups"].items():
        lines.append(f"| {group} | {g['catalog_share']:.1%} | {g['interaction_share']:.1%} | "
                     f"{g['exposure_share']:.1%} | {_ci(g['exposure_share_ci'], '.1%')} | {g['ratio']:.3f} | "
                     f"{_ci(g['ratio_ci'], '.3f')} |")
    lines += ["", f"Exposure disparity (min / max of exposure / catalog): {_num(e['disparity']['ratio'], '.3f')} "
              f"{_ci(e['disparity']['ci'], '.3f')} ({e['disparity']['worst']} → {e['disparity']['best']}); distance "
              f"from parity (½ Σ |exposure − catalog share|, the share of slots that would have to move): "
              f"{e['distance']['value']:.3f} {_ci(e['distance']['ci'], '.3f')}."]
    mitigation = summary["mitigation"]
    if mitigation["runs"]:
        lines += ["", "## Mitigation: exposure re-rank", "",
                  "Per user the model's scores over the catalog become rank percentiles (1 = best) and each item "
                  "gains strength × w of its decile ("
                  + ", ".join(f"{g} {w:.2f}" for g, w in mitigation["weights"].items()) + "): a strength s moves a D1 item up s × "
                  "the catalog's size in places. Δ: paired difference "
                  "to the model without re-rank over the same users (bootstrap CI).", "", *mitigation_rows(summary)]
        before = base["quality"][f"ndcg@{k}"]["by"]
        for strength, run in mitigation["runs"].items():
            lines += ["", f"NDCG@{k} disparity by user grouping at strength {strength}: " + "; ".join(
                f"{name} {_disparity(q)} (was {_disparity(before[name])})"
                for name, q in run["quality"][f"ndcg@{k}"]["by"].items()) + "."]
    else:
        lines += ["", "No mitigation measured (`--fairness-mitigation none`)."]
    lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots]
    lines += ["", "## Wall time (s)", "", "```", json.dumps(summary["seconds"], indent=1), "```", ""]
    return "\n".join(lines)


def _errors(means: list[float], cis: list) -> np.ndarray:
    """Matplotlib's (2, n) error bars from CIs; a group without a CI gets none."""
    lo = [m - c[0] if c and None not in c else 0.0 for m, c in zip(means, cis)]
    hi = [c[1] - m if c and None not in c else 0.0 for m, c in zip(means, cis)]
    return np.array([lo, hi])


def plot_quality(out_dir: Path, summary: dict) -> Path:
    plt = pyplot()
    metric = f"ndcg@{summary['k']}"
    block = summary["base"]["quality"][metric]
    fig, axes = plt.subplots(len(block["by"]), 1, figsize=(10, 2.8 * len(block["by"])), squeeze=False)
    for ax, (name, q) in zip(axes[:, 0], block["by"].items()):
        names = list(q["groups"])
        means = [q["groups"][g]["mean"] for g in names]
        ax.bar(names, means, yerr=_errors(means, [q["groups"][g]["mean_ci"] for g in names]), capsize=2)
        ax.axhline(block["overall"], color="grey", linestyle="--", linewidth=1, label="all users")
        ax.set_title(f"{metric.upper()} by {name} (95 % CI)")
        ax.tick_params(axis="x", rotation=30 if len(names) > 8 else 0, labelsize="small")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    path = out_dir / "fairness_quality.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_exposure(out_dir: Path, summary: dict) -> Path:
    plt = pyplot()
    groups = summary["base"]["exposure"]["groups"]
    deciles = list(groups)
    series = {"catalog": [groups[g]["catalog_share"] for g in deciles],
              "train positives": [groups[g]["interaction_share"] for g in deciles],
              "top-10 slots": [groups[g]["exposure_share"] for g in deciles]}
    for strength, run in summary["mitigation"]["runs"].items():
        series[f"top-10, re-rank {strength}"] = [run["exposure"]["groups"][g]["exposure_share"] for g in deciles]
    fig, ax = plt.subplots(figsize=(10, 4))
    grouped_bars(ax, deciles, series)
    ax.set_ylabel("share")
    ax.set_xlabel("popularity decile by train positives (D1: least popular)")
    ax.set_title(f"{summary['dataset']['name']}: exposure of {summary['model']}")
    ax.legend(fontsize="small")
    path = out_dir / "fairness_exposure.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_tradeoff(out_dir: Path, summary: dict) -> Path:
    plt = pyplot()
    metric = f"ndcg@{summary['k']}"
    runs = {"0": summary["base"]} | summary["mitigation"]["runs"]
    x = [run["exposure"]["distance"]["value"] for run in runs.values()]
    y = [run["quality"][metric]["overall"] for run in runs.values()]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, y, marker="o")
    for strength, xi, yi in zip(runs, x, y):
        ax.annotate(f"strength {strength}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set_xlabel("exposure distance from parity (share of top-10 slots to move; 0 = parity)")
    ax.set_ylabel(metric.upper())
    ax.set_title("exposure re-rank: accuracy vs exposure parity")
    ax.grid(alpha=0.3)
    path = out_dir / "fairness_tradeoff.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
