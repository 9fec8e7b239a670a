"""``streamrec ab report``: an experiment's exposures joined with their outcomes, summed up per variant.

Per variant: users, lists, CTR (the share of lists with a click or watch of a shown item within
``experiments.outcome_window_minutes``), clicks and seconds watched per list and NDCG at exposure, each with a
95 % CI; each variant against the first one declared (the control), with the p-value of the difference;
sample-ratio mismatch; and for variants that explored, the greedy policy's clicks per list estimated off-policy
(IPS, SNIPS) from their logged propensities. The statistics are ``serving.experiments.stats``.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from serving.experiments import stats
from serving.experiments.exposure import BadExposure, Exposure, parse_exposure
from serving.experiments.outcomes import Outcome, join
from serving.experiments.stats import Comparison, Estimate
from streamrec.config import Settings
from streamrec.events import Event, InvalidEvent, parse_event

log = logging.getLogger(__name__)

# (name, what it is per list, how an outcome gives its value)
METRICS: tuple[tuple[str, str, Callable[[Outcome], float]], ...] = (
    ("ctr", "CTR", lambda o: float(o.clicked)),
    ("clicks", "clicks/list", lambda o: float(o.clicks)),
    ("watch_s", "watch s/list", lambda o: o.watch_seconds),
    ("ndcg", "NDCG@exposure", lambda o: o.ndcg),
)


@dataclass
class VariantReport:
    name: str
    users: int
    lists: int
    metrics: dict[str, Estimate]
    vs_control: dict[str, Comparison] = field(default_factory=dict)  # empty for the control
    explored_slots: int = 0
    ips: Estimate | None = None  # the greedy policy's clicks per list, off-policy, when the variant explored
    snips: Estimate | None = None


@dataclass
class Report:
    experiment: str
    window_minutes: float
    variants: list[VariantReport]
    shares: dict[str, float]  # the expected share of users per variant
    srm_p: float
    skipped: dict[str, int]  # records that were not exposures / events, and exposures of unknown variants

    @property
    def srm(self) -> bool:
        return self.srm_p < stats.SRM_ALPHA


def _user_sums(outcomes: Sequence[Outcome]) -> tuple[dict, int]:
    """Per user: lists, the metrics' sums, and the off-policy sums (w·r, and w·r and w by position)."""
    width = max((len(o.engaged) for o in outcomes), default=0)
    sums: dict[str, dict] = {}
    for o in outcomes:
        s = sums.setdefault(o.exposure.user_id, {"lists": 0, **{m: 0.0 for m, *_ in METRICS},
                                                 "ips": 0.0, "gain": np.zeros(width), "weight": np.zeros(width)})
        s["lists"] += 1
        for m, _, value in METRICS:
            s[m] += value(o)
        for shown, engaged in zip(o.exposure.items, o.engaged, strict=True):
            w = 0.0 if shown.explored else 1.0 / shown.propensity
            s["ips"] += w * engaged
            s["gain"][shown.position - 1] += w * engaged
            s["weight"][shown.position - 1] += w
    return sums, width


def summarize(experiment: str, outcomes: Sequence[Outcome], shares: Mapping[str, float], window_minutes: float,
              skipped: Mapping[str, int] | None = None) -> Report:
    by_variant: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_variant[o.exposure.variant].append(o)
    per_user = {v: _user_sums(by_variant.get(v, []))[0] for v in shares}
    control = next(iter(shares))

    def columns(v: str, metric: str) -> tuple[list[float], list[float]]:
        users = per_user[v].values()
        return [u[metric] for u in users], [u["lists"] for u in users]

    variants = []
    for v in shares:
        users = per_user[v]
        report = VariantReport(v, len(users), sum(u["lists"] for u in users.values()),
                               {m: stats.ratio_estimate(*columns(v, m)) for m, *_ in METRICS})
        if v != control:
            report.vs_control = {m: stats.compare(columns(control, m), columns(v, m)) for m, *_ in METRICS}
        report.explored_slots = sum(s.explored for o in by_variant.get(v, []) for s in o.exposure.items)
        if report.explored_slots:
            report.ips = stats.ratio_estimate(*columns(v, "ips"))
            report.snips = stats.snips(np.array([u["gain"] for u in users.values()]),
                                       np.array([u["weight"] for u in users.values()]))
        variants.append(report)
    srm_p = stats.sample_ratio_mismatch({v.name: v.users for v in variants}, shares)
    return Report(experiment, window_minutes, variants, dict(shares), srm_p, dict(skipped or {}))


def _ci(e: Estimate, digits: int = 4) -> str:
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def render(report: Report) -> str:
    """The report as markdown."""
    lines = [f"Experiment `{report.experiment}`: outcomes within {report.window_minutes:g} min of the exposure; "
             "95 % CIs over users (delta method); p: two-sided z-test against the control "
             f"`{report.variants[0].name}`.", "",
             "| variant | users | lists | " + " | ".join(label for _, label, _ in METRICS) + " |",
             "|---|---:|---:|" + "---:|" * len(METRICS)]
    for v in report.variants:
        lines.append(f"| {v.name} | {v.users} | {v.lists} | " + " | ".join(
            _ci(v.metrics[m], 3 if m == "watch_s" else 4) for m, *_ in METRICS) + " |")
    lines += ["", "| variant − control | " + " | ".join(label for _, label, _ in METRICS) + " |",
              "|---|" + "---:|" * len(METRICS)]
    for v in report.variants[1:]:
        cells = []
        for m, *_ in METRICS:
            c = v.vs_control[m]
            mark = " **significant**" if c.significant else ""
            cells.append(f"{c.diff.value:+.4f} [{c.diff.low:+.4f}, {c.diff.high:+.4f}] "
                         f"({c.relative:+.1%}), p = {c.p_value:.3g}{mark}")
        lines.append(f"| {v.name} | " + " | ".join(cells) + " |")
    shares = ", ".join(f"{n} {s:.0%}" for n, s in report.shares.items())
    verdict = ("**sample-ratio mismatch**: do not trust this comparison" if report.srm
               else "no sample-ratio mismatch")
    lines += ["", f"Users per variant against the configured shares ({shares}): chi-square p = "
              f"{report.srm_p:.3g}, {verdict}."]
    explored = [v for v in report.variants if v.ips is not None]
    if explored:
        lines += ["", "Off-policy: the greedy list's clicks per list (no slot explored), estimated from the "
                  "exploring variant's logged propensities:", "",
                  "| variant | explored slots | observed clicks/list | greedy, IPS | greedy, SNIPS |",
                  "|---|---:|---:|---:|---:|"]
        for v in explored:
            assert v.ips is not None and v.snips is not None
            lines.append(f"| {v.name} | {v.explored_slots} | {_ci(v.metrics['clicks'])} | {_ci(v.ips)} | "
                         f"{_ci(v.snips)} |")
    if any(report.skipped.values()):
        lines += ["", "Skipped: " + ", ".join(f"{n} {c}" for n, c in report.skipped.items() if c) + "."]
    return "\n".join(lines) + "\n"


def read(settings: Settings, experiment: str, records: Callable[[str], Iterable] | None = None,
         progress: Callable[[str], None] = lambda _: None) -> tuple[list[Exposure], list[Event], dict[str, int]]:
    """The experiment's exposures and the events that may follow them, from the topics (``records``: a topic's
    records, ``streams.kafka_util.read_topic`` by default)."""
    from streams.kafka_util import read_topic

    records = records or (lambda topic: read_topic(settings.kafka, topic))
    skipped = {"bad exposure records": 0, "bad event records": 0}
    exposures = []
    for n, rec in enumerate(records(settings.kafka.exposures_topic), 1):
        try:
            e = parse_exposure(rec.value)
        except BadExposure as err:
            skipped["bad exposure records"] += 1
            log.warning("%s offset %s: %s", settings.kafka.exposures_topic, rec.offset, err)
            continue
        if e.experiment == experiment:
            exposures.append(e)
        if n % 100_000 == 0:
            progress(f"exposures: {n:,} records read")
    progress(f"exposures: {len(exposures):,} of experiment {experiment!r}")
    start = min((e.ts_ms for e in exposures), default=0)
    users = {e.user_id for e in exposures}
    events = []
    for n, rec in enumerate(records(settings.kafka.events_topic), 1):
        try:
            ev = parse_event(rec.value, max_bytes=settings.ingest.max_event_bytes)
        except InvalidEvent:
            skipped["bad event records"] += 1
            continue
        if ev.ts_ms >= start and ev.user_id in users:
            events.append(ev)
        if n % 100_000 == 0:
            progress(f"events: {n:,} records read")
    progress(f"events: {len(events):,} of the experiment's users since its first exposure")
    return exposures, events, skipped


def build(settings: Settings, experiment: str | None = None,
          progress: Callable[[str], None] = lambda _: None, **read_options) -> Report:
    """The report of ``experiment`` (default: the configured one) from the topics."""
    from serving.experiments.assignment import shares as configured_shares
    from streamrec.errors import UserError

    cfg = settings.experiments
    name = experiment or cfg.name
    if not name:
        raise UserError("no experiment named: give --experiment NAME or set experiments.name")
    exposures, events, skipped = read(settings, name, progress=progress, **read_options)
    if not exposures:
        raise UserError(f"no exposures of experiment {name!r} in {settings.kafka.exposures_topic}")
    if name == cfg.name:
        shares = configured_shares(cfg)
    else:  # an experiment no longer configured: its variants as logged, assumed equal (said in the report)
        seen = sorted({e.variant for e in exposures})
        shares = {v: 1.0 / len(seen) for v in seen}
    unknown = [e for e in exposures if e.variant not in shares]
    skipped["exposures of variants not configured"] = len(unknown)
    window_ms = int(cfg.outcome_window_minutes * 60_000)
    outcomes = join([e for e in exposures if e.variant in shares], events, window_ms)
    return summarize(name, outcomes, shares, cfg.outcome_window_minutes, skipped)
