"""``streamrec features apply|online|load-catalog|build-profiles``: the Feast side by hand."""
from __future__ import annotations

import argparse
import json

from streamrec.config import Settings
from streamrec.errors import UserError
from streamrec.pseudonyms import pseudonymizer


def _client(settings: Settings):
    from features.store import FeatureStoreClient

    return FeatureStoreClient(settings)


def _apply(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(settings)
    client.apply()
    print(f"applied project {client.config.project}: {', '.join(o.name for o in client.defs.objects())} "
          f"(registry {client.config.registry.path}, online store {settings.feast.online_store})")
    return 0


def _online(args: argparse.Namespace, settings: Settings) -> int:
    for row in _client(settings).online_features(args.user_ids):
        print(json.dumps(row, default=str))
    return 0


def _load_catalog(args: argparse.Namespace, settings: Settings) -> int:
    n = _client(settings).load_catalog(args.items)
    print(f"loaded {n} items (offline parquet and online store)")
    return 0


def _build_profiles(args: argparse.Namespace, settings: Settings) -> int:
    import pandas as pd

    from features.offline import read_event_log

    events = pd.DataFrame(read_event_log(args.events, users=pseudonymizer(settings)),
                          columns=["user_id", "item_id", "ts_ms"])
    if events.empty:
        raise UserError(f"event log {args.events} holds no events")
    try:
        cut = pd.Timestamp(args.cut) if args.cut else pd.Timestamp(events["ts_ms"].max(), unit="ms", tz="UTC")
    except ValueError as e:
        raise UserError(f"--cut {args.cut!r} is not an ISO-8601 time: {e}") from None
    n = _client(settings).build_profiles(events, cut)
    print(f"built {n} user profiles as of {cut.isoformat()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="the Feast feature store: register, inspect, load batch features")
    fsub = p.add_subparsers(dest="features_command", required=True, metavar="ACTION")
    fsub.add_parser("apply", help="register the feature definitions (idempotent; like `feast apply`)").set_defaults(func=_apply)
    online = fsub.add_parser("online", help="print the live session features of users, one JSON line each")
    online.add_argument("user_ids", nargs="+", metavar="USER_ID")
    online.set_defaults(func=_online)
    catalog = fsub.add_parser("load-catalog", help="item features from a catalog items.jsonl, offline and online")
    catalog.add_argument("items", metavar="ITEMS_JSONL")
    catalog.set_defaults(func=_load_catalog)
    profiles = fsub.add_parser("build-profiles", help="long-term user profiles from an events JSONL file")
    profiles.add_argument("events", metavar="EVENTS_JSONL")
    profiles.add_argument("--cut", help="ISO-8601 time: use events up to it and stamp the profiles with it (default: the newest event)")
    profiles.set_defaults(func=_build_profiles)
