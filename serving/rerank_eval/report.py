"""The re-rank evaluation's report: ``rerank.json`` (every figure and every session's two orders) and
``rerank.md`` (the lift with its CI per mode, per seed, per context type; latencies; statuses; the LLM used)."""
from __future__ import annotations

import json
from pathlib import Path

from streamrec.errors import UserError

ORACLE = "oracle_intent"  # the world's own intent genre at a request's weight, no LLM: what intent mode could reach
# The same LLM intents as "intent", blended at a request's full weight instead of CONTEXT_ONLY_SCALE: why the scale.
FULL_WEIGHT = "intent_full_weight"
LABELS = {ORACLE: f"{ORACLE} (bound: the world's true intent, no LLM)",
          FULL_WEIGHT: f"{FULL_WEIGHT} (the same intents at a request's weight)"}


def write_report(out_dir: Path, summary: dict) -> list[Path]:
    """Write both files for a ``run.run_rerank_evaluation`` summary; returns their paths."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create report directory {out_dir}: {e.strerror}") from None
    data, text = out_dir / "rerank.json", out_dir / "rerank.md"
    data.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    text.write_text(markdown(summary), encoding="utf-8")
    return [text, data]


def markdown(summary: dict) -> str:
    k, world = summary["k"], summary["world"]
    lines = [
        "# LLM re-rank: lift over Wide & Deep on context-shifted sessions", "",
        (f"LLM: `{summary['llm']['model']}` at `{summary['llm']['endpoint']}`{_decoder(summary['llm'])}. "
         f"World seeds {summary['seeds']}, each {world['users']} users, {world['items']} items, {world['days']} days; "
         f"the last {world['holdout_days']} day(s) held out. W&D (live features) trains on the picks before the "
         f"cutoff; each held-out session whose (day-part, weekend, device) differs from the user's usual one is "
         f"scored at its start; the W&D top {summary['top_n']} of the user's unseen items are re-ranked. Relevant: "
         f"the items watched in the session. Means are over seeds; 95 % CIs from a paired bootstrap of sessions "
         f"within each seed."), "",
        "## Lift", "",
        f"| mode | sessions | NDCG@{k} W&D | + re-rank | lift | 95 % CI | HR@{k} W&D | + re-rank | lift | 95 % CI | fell back |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, block in summary["modes"].items():
        ndcg, hr = block["overall"][f"ndcg@{k}"], block["overall"][f"hr@{k}"]
        name = LABELS.get(mode, mode)
        lines.append(f"| {name} | {block['sessions']} | {_f(ndcg['base'])} | {_f(ndcg['treated'])} | {_pct(ndcg['relative'])} "
                     f"| {_ci(ndcg['relative_ci'])} | {_f(hr['base'])} | {_f(hr['treated'])} | {_pct(hr['relative'])} "
                     f"| {_ci(hr['relative_ci'])} | {block['fell_back']} |")
    for mode, block in summary["modes"].items():
        lines += ["", f"## {mode}", "", f"Per seed (NDCG@{k}):", "",
                  "| seed | sessions | W&D | + re-rank | lift | 95 % CI | difference CI |", "|---|---|---|---|---|---|---|"]
        for seed, figures in block["per_seed"].items():
            f = figures[f"ndcg@{k}"]
            lines.append(f"| {seed} | {f['sessions']} | {_f(f['base'])} | {_f(f['treated'])} | {_pct(f['relative'])} "
                         f"| {_ci(f['relative_ci'])} | {_ci(f['diff_ci'], pct=False)} |")
        lines += ["", f"By context type (the world's context rules that match the session; NDCG@{k}, all seeds):", "",
                  f"| context type | sessions | W&D | + re-rank | lift | 95 % CI | HR@{k} W&D → re-rank | intent favours the world's genre |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, f in block["by_context_type"].items():
            fit = "" if f["intent_favours_world_genre"] is None else _pct(f["intent_favours_world_genre"], sign=False)
            lines.append(f"| {name} | {f['sessions']} | {_f(f['base'])} | {_f(f['treated'])} | {_pct(f['relative'])} "
                         f"| {_ci(f['relative_ci'])} | {_f(f[f'hr@{k}_wd'])} → {_f(f[f'hr@{k}_rerank'])} | {fit} |")
        if mode in LABELS:
            continue
        lat = block["latency"]
        lines += ["", (f"Decisions: {block['calls']['count']} LLM calls for {block['sessions']} sessions "
                       f"(statuses of the calls: {_counts(block['calls']['statuses'])}; of the sessions: "
                       f"{_counts(block['statuses'])}). Decision latency: p50 {_ms(lat['p50_ms'])}, "
                       f"p95 {_ms(lat['p95_ms'])}, max {_ms(lat['max_ms'])}.")]
        if block["intents"]:
            lines += ["", "Intents decided (mood/genre/length: calls), by context:", ""]
            lines += [f"- {context}: {_counts(found)}" for context, found in sorted(block["intents"].items())]
    lines += ["", "## Data", "",
              "| seed | events | sessions held out | no history | usual context | no new watch | evaluated | train positives |",
              "|---|---|---|---|---|---|---|---|"]
    for seed, info in summary["per_seed"].items():
        c = info["counts"]
        lines.append(f"| {seed} | {info['world_events']} | {c['held_out']} | {c['no_history']} | {c['usual_context']} "
                     f"| {c['no_new_watch']} | {c['evaluated']} | {info['train_positives']} |")
    lines += ["", f"Wall time {summary['seconds']:.0f} s. Every session's two orders are in `rerank.json`.", ""]
    return "\n".join(lines)


def _decoder(llm: dict) -> str:
    decoder = llm.get("settings", {}).get("intent_decoder")
    return f" (intent decoder: {decoder})" if decoder else ""


def _f(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _pct(value, sign: bool = True) -> str:
    return "–" if value is None else (f"{value:+.1%}" if sign else f"{value:.0%}")


def _ci(bounds, pct: bool = True) -> str:
    if bounds is None:
        return "–"
    return f"[{bounds[0]:+.1%}, {bounds[1]:+.1%}]" if pct else f"[{bounds[0]:+.4f}, {bounds[1]:+.4f}]"


def _ms(value) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def _counts(counts: dict) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"
