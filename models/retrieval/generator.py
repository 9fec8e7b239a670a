"""The candidate generator: mixes the retrieval sources into one list of distinct catalog items.

- Known user (in the MF vocabulary, or with a live vector): MF inner-product candidates, a content top-up of *new*
  items (few positive users, so MF cannot place them) matching the user's live genre affinities, then contextual
  popular.
- Unknown user: content candidates over the whole catalog when live affinities exist, then contextual popular.

A user new since training is placed by their live vector (the session row's ``user_vector``, folded in by the
stream job from what they just did against the trained item factors: ``features.user_vector``) when it was folded
on this generator's factors (``user_vector_model`` is their version): MF candidates after one event, no
retraining. A vector folded on other factors (before a retraining) is ignored until the user's next event. A user
known at training keeps the trained vector, which predicted their next watches better (module ``candidates``).

A content score is the cosine of the item's genres with the live affinities, plus ``TEXT_WEIGHT`` times the cosine
of its text embedding (``models.text_embedding``, when the generator holds them) with the mean embedding of the
session's last items: how a new item with no positive yet is placed beside what the user just watched.

Items added or changed after training (the catalog topic) join with ``with_items``: content places them at once;
MF and popularity know them only after the next training.

Contextual popular always fills the list to k (every catalog item has a popularity score), so a call returns
min(k, catalog items not excluded) distinct ids, the same ones for the same inputs. Scores are each source's own
(inner product, cosine, smoothed context share): comparable within a source, not across.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from features.user_vector import ITEM_FACTORS_FILE, RETRIEVAL_DIR, ItemFactors
from models.baselines import BPR
from models.data import IdEncoder, encoded_positives
from models.retrieval.index import (
    INDEX_KINDS,
    ExactIndex,
    FaissIVFIndex,
    IVFIndex,
    build_index,
    load_index,
    read_saved,
    top_k,
)
from models.retrieval.sources import (
    CONTEXT_FIELDS,
    ContextPopularity,
    content_scores,
    genre_vectors,
    live_affinity,
    mips_query,
    mips_vectors,
    normalized_context,
)
from models.text_embedding import DIM
from streamrec.config import ServingConfig
from streamrec.errors import UserError
from streamrec.vocabulary import daypart

_FORMAT_VERSION = 1
# The text cosine's weight beside the genre cosine in a content score: not tuned (the synthetic world's titles are
# random words); with it, a new item's title and description count about half as much as its genres.
TEXT_WEIGHT = 0.5
REQUIRED_COLUMNS = ("user_id", "item_id", "ts_ms", "device", "label")


class Candidate(NamedTuple):
    item_id: str
    score: float
    source: str  # "embedding" | "content" | "popular"


@dataclass(frozen=True)
class MixerConfig:
    # Defaults measured on the synthetic world (200 users, 500 items, 7 days; see the retrieval report): popular
    # slots for known users cost recall (MF's item bias already carries popularity), so popular only fills; ten
    # per cent of content slots find a third of the positives on new items for half a point of overall recall.
    content_share: float = 0.1  # of k: a known user's new-item content slots (when live affinities exist)
    popular_share: float = 0.0  # of k: a known user's contextual-popular slots (beyond filling)
    cold_content_share: float = 0.5  # of k: an unknown user's content slots (when live affinities exist)
    new_item_max_users: int = 2  # an item with at most this many positive users is new to MF
    # Pseudo-watches pulling a context's popularity towards its parent's: context cells of a few hundred watches
    # over hundreds of items are mostly noise (a small prior did worse than overall popularity), big ones speak.
    popularity_prior: float = 1000.0

    def __post_init__(self):
        shares = (self.content_share, self.popular_share, self.cold_content_share)
        if not all(0 <= s <= 1 for s in shares) or self.content_share + self.popular_share > 1:
            raise UserError(f"mixer shares must be in [0, 1] and a known user's add up to <= 1, got {self}")
        if self.new_item_max_users < 0:
            raise UserError(f"new_item_max_users must be >= 0, got {self.new_item_max_users}")


def retrieval_dir(settings) -> Path:
    """Where the trained generator lives by default: ``<data dir>/retrieval``."""
    return settings.data_path / RETRIEVAL_DIR


class CandidateGenerator:
    def __init__(
        self, catalog_ids, genres: np.ndarray, item_users: np.ndarray, user_ids, user_vectors: np.ndarray,
        index: ExactIndex | IVFIndex | FaissIVFIndex, popularity: ContextPopularity, config: MixerConfig, info: dict,
        texts: np.ndarray | None = None, item_factors: ItemFactors | None = None,
    ):
        """``texts``: the items' text embeddings (a zero row for an item without one), or None. ``item_factors``: the
        MF item factors (the index's vectors without the bias), which live user vectors are folded against."""
        self.catalog = IdEncoder(catalog_ids)
        if list(self.catalog.ids) != list(catalog_ids):
            raise UserError("catalog ids must be distinct and sorted")
        self._catalog_index = pd.Index(self.catalog.ids)  # lookups that skip unknown ids rather than fail
        self.genres, self.item_users = genres, np.asarray(item_users, np.int64)
        self.user_ids = list(user_ids)
        self._user_row = {u: n for n, u in enumerate(self.user_ids)}
        self.user_vectors = np.asarray(user_vectors, np.float32)
        self.index, self.popularity, self.config, self.info = index, popularity, config, info
        self._index_items = self.catalog.encode(index.ids)  # index code -> catalog code
        self.new_items = self.item_users <= config.new_item_max_users  # bool per catalog item
        self.texts = None if texts is None else np.asarray(texts, np.float32)
        n = len(self.catalog)
        if self.texts is not None and self.texts.shape[0] != n:
            raise UserError(f"text embeddings {self.texts.shape} do not match the catalog of {n} items")
        if genres.shape[0] != n or self.item_users.shape != (n,) or popularity.counts.shape[1] != n:
            raise UserError(f"generator arrays do not match the catalog of {n} items")
        if self.user_vectors.shape != (len(self.user_ids), index.dim):
            raise UserError(f"user vectors {self.user_vectors.shape} do not match {len(self.user_ids)} users "
                            f"and the index's dimension {index.dim}")
        self.item_factors = item_factors
        if item_factors is not None and item_factors.dim + 1 != index.dim:
            raise UserError(f"item factors of dimension {item_factors.dim} do not fit the index's {index.dim} "
                            "(factors and the bias)")

    # ------------------------------------------------------------ fit

    @classmethod
    def fit(
        cls, events: pd.DataFrame, items: Mapping[str, Mapping], *, bpr: BPR | None = None, index: str = "auto",
        n_lists: int | None = None, nprobe: int | None = None, index_k: int = ServingConfig.candidates,
        config: MixerConfig = MixerConfig(), timezone: str = "UTC", texts: Mapping[str, np.ndarray] | None = None,
    ) -> CandidateGenerator:
        """Learn from a labelled event log (``models.retrieval.log.load_event_log``) and the item catalog
        (item_id -> record with ``genres``, as ``streamrec.catalog.load_items`` reads it).

        Events on items outside the catalog are dropped (they could never be served); ``info`` counts them.
        ``timezone`` (``settings.features.timezone``) places each watch in its day-part and weekend.
        ``index``: one of ``models.retrieval.index.INDEX_KINDS``; ``auto`` is exact for a small catalog, the faiss
        IVF for a large one, its nprobe tuned for recall@``index_k`` (the serving candidate count) on these users.
        ``texts``: item_id -> text embedding (``models.text_embedding``), for the content source.
        """
        missing = [c for c in REQUIRED_COLUMNS if c not in events.columns]
        if missing:
            raise UserError(f"the event log lacks column(s) {missing}; load it with "
                            "models.retrieval.log.load_event_log")
        if index not in INDEX_KINDS:
            raise UserError(f"index must be one of {INDEX_KINDS}, got {index!r}")
        if not items:
            raise UserError("the item catalog is empty")
        catalog = IdEncoder(items)
        in_catalog = events["item_id"].isin(catalog.ids)
        events = events[in_catalog]
        if not events["label"].any():
            raise UserError("no positive (watch) event on a catalog item to learn from")
        positives, users, mf_items = encoded_positives(events)
        bpr = (bpr or BPR(progress=False)).fit(positives, len(users), len(mf_items))
        user_vectors, item_vectors = mips_vectors(bpr)
        ids = mf_items.ids.tolist()
        # Known users are the only ones the index serves, so their vectors are the queries to tune it on.
        built = build_index(index, ids, item_vectors, queries=user_vectors, k=index_k, n_lists=n_lists,
                            nprobe=nprobe, seed=bpr.seed)
        item_users = np.bincount(catalog.encode(mf_items.decode(positives["item_idx"])), minlength=len(catalog))
        info = {
            "events": int(len(events)), "dropped_not_in_catalog": int((~in_catalog).sum()),
            "last_event_ms": int(events["ts_ms"].max()), "positives": int(len(positives)), "users": len(users),
            "mf_items": len(mf_items), "catalog_items": len(catalog), "bpr_final_loss": bpr.losses[-1],
        }
        popularity = ContextPopularity.from_positives(
            _context_positives(events, catalog, timezone), len(catalog), config.popularity_prior
        )
        genres = genre_vectors(items, catalog.ids)
        return cls(catalog.ids, genres, item_users, users.ids, user_vectors, built, popularity, config, info,
                   None if texts is None else _text_rows(texts, catalog.ids), ItemFactors.of(ids, item_vectors[:, :-1]))

    def with_items(self, items: Mapping[str, Mapping], texts: Mapping[str, np.ndarray] | None = None
                   ) -> CandidateGenerator:
        """This generator also serving ``items`` (item_id -> record, new or changed), the learned parts as they are:
        a new item has no positive user (content places it, as MF cannot) and no popularity yet.
        ``texts``: their text embeddings (item_id -> vector)."""
        catalog = IdEncoder([*self.catalog.ids, *items])
        old = catalog.encode(self.catalog.ids)
        changed = catalog.encode(list(items))
        genres = np.zeros((len(catalog), self.genres.shape[1]), np.float32)
        genres[old] = self.genres
        genres[changed] = genre_vectors(items, list(items))
        item_users = np.zeros(len(catalog), np.int64)
        item_users[old] = self.item_users
        counts = np.zeros((len(self.popularity.keys), len(catalog)), np.float32)
        counts[:, old] = self.popularity.counts
        popularity = ContextPopularity(self.popularity.keys, counts, self.popularity.prior)
        text_rows = None
        if self.texts is not None or texts:
            text_rows = np.zeros((len(catalog), DIM), np.float32)
            if self.texts is not None:
                text_rows[old] = self.texts
            if texts:
                text_rows[catalog.encode(list(texts))] = np.stack(list(texts.values()))
        return CandidateGenerator(catalog.ids, genres, item_users, self.user_ids, self.user_vectors, self.index,
                                  popularity, self.config, self.info, text_rows, self.item_factors)

    # ------------------------------------------------------------ serve

    def candidates(
        self, user_id: str | None, live: Mapping | None, context: Mapping, k: int, exclude: Iterable[str] = ()
    ) -> list[Candidate]:
        """Up to k distinct catalog items for a user now; ``exclude``: ids never to return (unknown ones ignored)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise UserError(f"k must be an integer >= 0, got {k!r}")
        if isinstance(exclude, str):
            raise UserError("exclude must be a collection of item ids, not one string")
        context = normalized_context(context)
        banned = np.zeros(len(self.catalog), bool)
        excluded = self._catalog_index.get_indexer(np.asarray(list(exclude), dtype=object))
        banned[excluded[excluded >= 0]] = True
        affinity = live_affinity(live)
        row = self._user_row.get(user_id)
        # A trained vector where there is one: on a generated world it found more of the next watches than the
        # vector folded in from the last 20 events (recall@50 0.383 against 0.348; features.user_vector).
        query = self.user_vectors[row : row + 1] if row is not None else self.live_query(live)
        share = self.config.content_share if query is not None else self.config.cold_content_share
        n_content = round(k * share) if affinity is not None else 0
        out: list[Candidate] = []
        if query is not None:
            self._take_embedding(out, query, k - n_content - round(k * self.config.popular_share), banned)
        if n_content:
            # A known user's established items are MF's to place: the content slots go to items MF has not learned.
            skip = banned | ~self.new_items if query is not None else banned
            assert affinity is not None  # n_content is 0 without it
            self._take(out, "content", self._content_scores(affinity, live), n_content, banned, skip)
        _, popular = self.popularity.scores(context)
        self._take(out, "popular", popular, k - len(out), banned)
        return out

    def _content_scores(self, affinity: np.ndarray, live: Mapping | None) -> np.ndarray:
        scores = content_scores(self.genres, affinity)
        recent = self._catalog_index.get_indexer(list((live or {}).get("last_items") or ()))
        recent = recent[recent >= 0]
        if self.texts is None or not len(recent):
            return scores
        mean = self.texts[recent].mean(axis=0)
        norm = np.linalg.norm(mean)
        return scores + TEXT_WEIGHT * (self.texts @ (mean / norm)) if norm > 0 else scores

    def live_query(self, live: Mapping | None) -> np.ndarray | None:
        """The index query (1, dim) of the session row's live user vector; None without one folded on these factors."""
        vector = (live or {}).get("user_vector")
        factors = self.item_factors
        if vector is None or factors is None or (live or {}).get("user_vector_model") != factors.version:
            return None
        vector = np.asarray(vector, np.float32)
        if vector.shape != (factors.dim,) or not np.isfinite(vector).all():
            raise UserError(f"a live user vector must be {factors.dim} finite numbers, got shape {vector.shape}")
        return mips_query(vector)

    def _take_embedding(self, out: list[Candidate], query: np.ndarray, n: int, banned: np.ndarray) -> None:
        if n <= 0:
            return
        exclude = [np.flatnonzero(banned[self._index_items])]
        codes, scores = self.index.search(query, n, exclude)
        found = codes[0] >= 0
        chosen = self._index_items[codes[0][found]]
        banned[chosen] = True
        out.extend(Candidate(i, float(s), "embedding") for i, s in zip(self.catalog.decode(chosen), scores[0][found]))

    def _take(self, out, source: str, scores: np.ndarray, n: int, banned: np.ndarray, skip=None) -> None:
        """Append the n best by ``scores`` not in ``banned`` (nor ``skip``) and ban them for the rest of the list."""
        if n <= 0:
            return
        chosen = top_k(scores, n, banned if skip is None else skip)
        banned[chosen] = True
        out.extend(Candidate(i, float(s), source) for i, s in zip(self.catalog.decode(chosen), scores[chosen]))

    # ------------------------------------------------------------ persist

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.index.save(directory)
        arrays = {"genres": self.genres, "item_users": self.item_users, "user_vectors": self.user_vectors,
                  "popularity": self.popularity.counts}
        if self.texts is not None:
            arrays["texts"] = self.texts
        np.savez(directory / "generator.npz", **arrays)  # type: ignore[arg-type]  # numpy's stub types allow_pickle
        meta = {
            "version": _FORMAT_VERSION, "config": asdict(self.config), "info": self.info,
            "catalog_ids": self.catalog.ids.tolist(), "user_ids": self.user_ids,
            "popularity_keys": [list(key) for key in self.popularity.keys],
        }
        (directory / "generator.json").write_text(json.dumps(meta), encoding="utf-8")
        # Beside the generator, where the stream job reads them (features.user_vector.item_factors_path).
        if self.item_factors is not None:
            self.item_factors.save(directory / ITEM_FACTORS_FILE)
        else:  # a stale file would have the stream job fold against factors this generator does not hold
            (directory / ITEM_FACTORS_FILE).unlink(missing_ok=True)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> CandidateGenerator:
        directory = Path(directory)
        meta, arrays = read_saved(directory, "generator", "no trained candidate generator (streamrec train)")
        if meta.get("version") != _FORMAT_VERSION:
            raise UserError(f"{directory}: unsupported generator format version {meta.get('version')!r}")
        config = MixerConfig(**meta["config"])
        popularity = ContextPopularity([tuple(k) for k in meta["popularity_keys"]], arrays["popularity"],
                                       config.popularity_prior)
        factors_file = directory / ITEM_FACTORS_FILE
        return cls(meta["catalog_ids"], arrays["genres"], arrays["item_users"], meta["user_ids"],
                   arrays["user_vectors"], load_index(directory), popularity, config, meta["info"], arrays.get("texts"),
                   ItemFactors.load(factors_file) if factors_file.is_file() else None)


def _text_rows(texts: Mapping[str, np.ndarray], ids) -> np.ndarray:
    """One row per catalog id: its embedding, zeros where there is none."""
    rows = np.zeros((len(ids), DIM), np.float32)
    for n, item_id in enumerate(ids):
        if item_id in texts:
            rows[n] = texts[item_id]
    return rows


def _context_positives(events: pd.DataFrame, catalog: IdEncoder, timezone: str) -> pd.DataFrame:
    """The positives with their catalog code and context (day-part and weekend in ``timezone``, device)."""
    pos = events[events["label"]]
    local = pd.to_datetime(pos["ts_ms"].to_numpy(), unit="ms", utc=True).tz_convert(timezone)
    parts = np.array([daypart(h) for h in range(24)], dtype=object)
    return pd.DataFrame({
        "user_id": pos["user_id"].to_numpy(), "item": catalog.encode(pos["item_id"]),
        "daypart": parts[local.hour], "device": pos["device"].to_numpy(), "is_weekend": local.dayofweek >= 5,
    }, columns=["user_id", "item", *CONTEXT_FIELDS])
