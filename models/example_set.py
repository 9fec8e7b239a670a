"""Labelled examples as two tables and an index: each example is (its request's row, its item's row, label).

A positive and its negatives share one request (the user, the pick's time and device, the session and profile
features as of then), and the examples of one item share its item row. Storing the distinct requests and item rows
once, and each example as two row numbers, takes ~1/5 of the memory of a row per example, lets Feast join the
user's views once per request rather than once per example, and lets the model encode every request and item once
(``models.wide_deep.WideDeep``) and gather rows per batch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.examples import ITEM_COLUMNS


@dataclass(frozen=True)
class ExampleSet:
    requests: pd.DataFrame   # a row per positive: group, user_id, item_id (the pick), event_timestamp, device, the
    #                          session and profile views' features as of strictly before the pick
    items: pd.DataFrame      # distinct item feature rows (ITEM_COLUMNS) as the item view gave them
    request_row: np.ndarray  # per example: its request's position in ``requests``
    item_row: np.ndarray     # per example: its item's position in ``items``
    label: np.ndarray        # per example: 1 the pick, 0 a negative

    def __len__(self) -> int:
        return len(self.label)

    @property
    def positives(self) -> int:
        return int(self.label.sum())

    def of_groups(self, groups) -> ExampleSet:
        """The examples of the given positives (``requests["group"]`` values), their negatives with them."""
        keep = np.isin(self.requests["group"].to_numpy()[self.request_row], np.asarray(groups))
        return dataclasses.replace(self, request_row=self.request_row[keep], item_row=self.item_row[keep],
                                   label=self.label[keep])

    def with_items(self, items: pd.DataFrame) -> ExampleSet:
        """The same examples over another item table of the same rows (e.g. another ``popularity``)."""
        if len(items) != len(self.items):
            raise ValueError(f"the item table has {len(self.items)} rows, got {len(items)}")
        return dataclasses.replace(self, items=items.reset_index(drop=True))

    def frame(self) -> pd.DataFrame:
        """A row per example: its request's columns, its item's, and ``label``."""
        requests = self.requests.drop(columns="item_id").iloc[self.request_row].reset_index(drop=True)
        items = self.items.iloc[self.item_row].reset_index(drop=True)
        return pd.concat([requests, items], axis=1).assign(label=self.label)


def join_features(entities: pd.DataFrame, client) -> ExampleSet:
    """The examples of ``models.examples.entity_rows`` with their features point-in-time from Feast (``client``: a
    ``features.store.FeatureStoreClient``): the session and profile views once per positive, the item view once
    per distinct (item, time)."""
    positives = entities["label"].to_numpy() == 1
    requests = entities[positives].reset_index(drop=True)
    if requests["group"].duplicated().any() or not np.isin(entities["group"], requests["group"]).all():
        raise ValueError("every group of the entity rows must hold exactly one positive")
    requests = client.training_set(requests.drop(columns="label"), views=("session", "profile"))

    asked = entities[["item_id", "event_timestamp"]].drop_duplicates(ignore_index=True)
    joined = client.training_set(asked, views=("item",))
    # Rows equal in every value are one item row (lists compared as text); numbered in order of first appearance.
    key = joined[list(ITEM_COLUMNS)].assign(genres=joined["genres"].map(_genres_key))
    joined["item_row"] = key.groupby(list(ITEM_COLUMNS), dropna=False, sort=False).ngroup().to_numpy()
    items = joined.drop_duplicates("item_row")[list(ITEM_COLUMNS)].reset_index(drop=True)
    item_row = entities[["item_id", "event_timestamp"]].merge(
        joined[["item_id", "event_timestamp", "item_row"]], how="left")["item_row"].to_numpy()
    request_row = pd.Index(requests["group"]).get_indexer(entities["group"])
    return ExampleSet(requests, items, request_row, item_row, entities["label"].to_numpy(np.float32))


def _genres_key(genres) -> str:
    return "" if genres is None or isinstance(genres, float) else "|".join(map(str, genres))
