"""``streamrec train`` and ``streamrec evaluate``: the ranker from a recorded log, and the offline comparison."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamrec.config import Settings
from streamrec.errors import UserError

DATASETS = {"world": None, "movielens-100k": "ml-100k", "movielens-1m": "ml-1m"}


def event_log(args: argparse.Namespace, settings: Settings):
    """The events and catalog the arguments name: a generated world, or MovieLens converted under <data>."""
    from models.train import EventLog

    if args.data == "world":
        if args.path is not None:
            raise UserError("--path is for --data movielens-*; give a world directory with --world")
        world = args.world or settings.data_path / "world"
        events, items = world / "events.jsonl", world / "items.jsonl"
        missing = [p.name for p in (events, items) if not p.is_file()]
        if missing:
            raise UserError(f"{world} has no {' or '.join(missing)}: run `streamrec generate` first, or pass --world")
        return EventLog(events, items, "world")
    if args.world is not None:
        raise UserError(f"--world and --data {args.data} exclude each other")
    if args.path is None:
        raise UserError(f"--data {args.data} needs --path: the directory with the MovieLens files you downloaded")
    from streams.movielens import convert

    out = settings.data_path / "movielens" / args.data / "events.jsonl"
    fmt = DATASETS[args.data]
    assert fmt is not None  # only "world" has none, handled above
    summary = convert(args.path, out, fmt)
    return EventLog(Path(summary["paths"]["events"]), Path(summary["paths"]["items"]), args.data)


def _config(args: argparse.Namespace):
    from models.wide_deep import WideDeepConfig

    return WideDeepConfig() if args.epochs is None else WideDeepConfig(epochs=args.epochs)


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from models.train import train

    summary = train(settings, event_log(args, settings), live=not args.no_live, config=_config(args),
                    negatives=args.negatives, seed=args.seed, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from models.evaluate import run_evaluation

    if args.rerank and args.fairness:
        raise UserError("--rerank and --fairness are separate evaluations: run one at a time")
    if args.rerank:
        return _evaluate_rerank(args, settings)
    if args.fairness:
        return _evaluate_fairness(args, settings)
    log = event_log(args, settings)
    out = args.out or settings.data_path / "reports" / log.name
    protocols = ("loo", "full") if args.protocol == "all" else (args.protocol,)
    seeds = (args.seed,) if args.seeds is None else parse_ints(args.seeds, "--seeds")
    summary = run_evaluation(settings, log, out, protocols=protocols, seeds=seeds, config=_config(args),
                             negatives=args.negatives, progress=not args.quiet)
    print_evaluation(summary, out)
    return 0


def _evaluate_rerank(args: argparse.Namespace, settings: Settings) -> int:
    # The CLI is the top layer: it may reach up into serving and infra, which models itself never imports.
    from infra.llm import embedded_server
    from serving.rerank_eval.run import RerankOptions, run_rerank_evaluation

    if args.world is not None or args.path is not None or args.data != "world":
        raise UserError("--rerank generates its own worlds (--seeds, --world-users/-items/-days): "
                        "--world, --data and --path do not apply")
    given = {
        "seeds": None if args.seeds is None else parse_ints(args.seeds, "--seeds"),
        "modes": None if args.rerank_modes is None else parse_names(args.rerank_modes),
        "max_sessions": args.rerank_sessions, "users": args.world_users, "items": args.world_items,
        "days": args.world_days, "holdout_days": args.holdout_days,
    }
    # Unset flags keep RerankOptions' defaults, the one place they are written.
    options = RerankOptions(**{k: v for k, v in given.items() if v is not None}, negatives=args.negatives,
                            config=_config(args), progress=not args.quiet)
    # Beside the synthetic world's evaluation report (report.md), as its re-rank section.
    out = args.out or settings.data_path / "reports" / "world"
    # The embedded server (when it is the settings') on a port of its own, stopped afterwards.
    with embedded_server(settings, "rerank-eval-llm") as llm_settings:
        summary = run_rerank_evaluation(llm_settings, out, options)
    for mode, block in summary["modes"].items():
        f = block["overall"]["ndcg@10"]
        ci = "–" if f["relative_ci"] is None else f"[{f['relative_ci'][0]:+.1%}, {f['relative_ci'][1]:+.1%}]"
        lift = "–" if f["relative"] is None else f"{f['relative']:+.1%}"
        print(f"  {mode:<14} NDCG@10 {f['base']:.4f} -> {f['treated']:.4f}  lift {lift}  95% CI {ci}  "
              f"({block['sessions']} sessions)")
    print(f"report: {out / 'rerank.md'}")
    return 0


def user_attributes(args: argparse.Namespace, log):
    """The users' attributes the audit groups by: MovieLens's users file, a generated world's device preference
    (none when the world directory holds only the log)."""
    from models.fairness_audit import world_user_attributes
    from streams.movielens import load_user_attributes

    fmt = DATASETS[args.data]
    if fmt is not None:
        return load_user_attributes(args.path, fmt)
    world = log.events.parent
    return world_user_attributes(world) if (world / "users.jsonl").is_file() else None


def _evaluate_fairness(args: argparse.Namespace, settings: Settings) -> int:
    from models.fairness_audit import FairnessOptions, run_fairness
    from models.fairness_report import headline_rows, mitigation_rows

    if args.seeds is not None:
        raise UserError("--fairness audits one seed: give it with --seed")
    log = event_log(args, settings)
    out = args.out or settings.data_path / "reports" / log.name
    given = {"strengths": None if args.fairness_strengths is None
             else parse_floats(args.fairness_strengths, "--fairness-strengths"),
             "min_users": args.fairness_min_users}
    # Unset flags keep FairnessOptions' defaults, the one place they are written.
    options = FairnessOptions(**{k: v for k, v in given.items() if v is not None}, model=args.fairness_model,
                              mitigation=args.fairness_mitigation, seed=args.seed, negatives=args.negatives,
                              config=_config(args), progress=not args.quiet)
    summary = run_fairness(settings, log, out, user_attributes(args, log), options)
    print("\n".join(headline_rows(summary)))
    if summary["mitigation"]["runs"]:
        print("\n".join(mitigation_rows(summary)))
    print(f"report: {out / 'fairness.md'}")
    return 0


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"{flag} takes comma-separated numbers, got {text!r}") from None


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, got {text!r}") from None


def parse_names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def print_evaluation(summary: dict, out: Path, indent: str = "") -> None:
    several = len(summary["seeds"]) > 1
    for protocol, block in summary["protocols"].items():
        print(f"{indent}{protocol}:" + (f" (mean ± sd over seeds {summary['seeds']})" if several else ""))
        for model, figures in block["models"].items():
            spread = block["spread"][model]
            print(f"{indent}  {model:<18} " + "  ".join(
                f"{m}={v:.4f}" + (f"±{spread[m]:.4f}" if several else "")
                for m, v in figures.items() if isinstance(v, float)))
    print(f"{indent}report: {out / 'report.md'}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", choices=list(DATASETS), default="world", help="the event log to use (default: world)")
    p.add_argument("--world", type=Path, help="generated world directory (default: <data_dir>/world)")
    p.add_argument("--path", type=Path, help="MovieLens directory you downloaded (with --data movielens-*)")
    p.add_argument("--seed", type=int, default=0, help="seed of negatives, splits and training (default: 0)")
    p.add_argument("--negatives", type=int, default=4, help="sampled negatives per positive (default: 4)")
    p.add_argument("--epochs", type=int, help="Wide & Deep training epochs (default: the model config's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the Wide & Deep ranker on a recorded log and export a new version")
    _common(p)
    p.add_argument("--no-live", action="store_true", help="the ablation without context and session features")
    p.set_defaults(func=_train)
    p = sub.add_parser("evaluate", help="compare baselines and Wide & Deep offline; writes a report")
    _common(p)
    p.add_argument("--protocol", choices=("loo", "full", "all"), default="all", help="default: all")
    p.add_argument("--out", type=Path, help="report directory (default: <data_dir>/reports/<data>)")
    g = p.add_argument_group("re-rank lift (--rerank)")
    g.add_argument("--rerank", action="store_true",
                   help="W&D alone vs W&D + LLM re-rank on context-shifted held-out sessions of generated worlds; "
                        "writes rerank.md and rerank.json")
    p.add_argument("--seeds", help="comma-separated seeds (e.g. 0,1,2): the report gives each metric's mean and spread "
                                   "and CIs over them; with --rerank, the world seeds (default: 0,1,2)")
    g.add_argument("--rerank-modes", help="comma-separated: intent, listwise (default: intent)")
    g.add_argument("--rerank-sessions", type=int,
                   help="at most this many sessions per seed and mode (default: 300; listwise is seconds a call)")
    g.add_argument("--world-users", type=int, help="users per world (default: 300)")
    g.add_argument("--world-items", type=int, help="items per world (default: 400)")
    g.add_argument("--world-days", type=float, help="days per world (default: 8)")
    g.add_argument("--holdout-days", type=float, help="the last days held out (default: 2)")
    g = p.add_argument_group("fairness audit (--fairness)")
    g.add_argument("--fairness", action="store_true",
                   help="NDCG@10 and HR@10 by user group (activity; MovieLens: gender, age, occupation; a world: "
                        "preferred device) and top-10 exposure by popularity decile, disparity ratios with bootstrap "
                        "CIs, and a re-rank for exposure parity with its accuracy cost; writes fairness.md, "
                        "fairness.json and plots")
    g.add_argument("--fairness-model", default="wide-deep",
                   help="the model audited: wide-deep (default), wide-deep-no-live or a baseline's report name")
    g.add_argument("--fairness-mitigation", choices=("exposure_rerank", "none"), default="exposure_rerank",
                   help="re-rank the model's scores toward equal exposure of popularity deciles (default), or none")
    g.add_argument("--fairness-strengths",
                   help="comma-separated re-rank strengths: the share of the catalog an item of the least popular "
                        "decile moves up a user's ranking, less for each decile above (default: 0.05,0.1,0.25,0.5)")
    g.add_argument("--fairness-min-users", type=int,
                   help="user groups smaller than this are listed without ratios (default: 20)")
    p.set_defaults(func=_evaluate)
