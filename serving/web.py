"""The web page (``/ui/``): pick a viewer and a context, see both orders and the live features, publish events.

Plain HTML, CSS and JavaScript from ``serving/ui`` (nothing fetched from the network at run time), reading
the API's own ``/recommend`` and two small endpoints added here:

- ``/ui/config``: what the page needs besides the list (the ingest endpoint's port, the genre names behind
  the ``aff_*`` features, devices, sample viewers, the latest evaluation report);
- ``/items``: the catalog by genre or title, to pick an item to click or watch.

The page publishes events to the ingest endpoint (``streams.ingest_http``, which allows this page's
origin) with a token from its URL fragment (``#token=...``: never sent to a server, so never in a log);
``streamrec demo`` prints such a URL. The evaluation reports (aggregate metrics and plots, nothing about a
viewer) are served as files under ``/reports/``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import Depends, FastAPI, Query
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from models.examples import AFFINITY_COLUMNS
from streamrec.config import Settings
from streamrec.http_auth import HttpAuth
from streamrec.vocabulary import DEVICES, GENRES

UI_DIR = Path(__file__).parent / "ui"
SAMPLE_USERS = 50
MAX_ITEMS = 100
# What the page waits for an event to show in the features before it says it is late; it keeps watching until the
# give-up time, for a cold or restarting stream job to catch up.
FRESHNESS_BUDGET_S = 10.0
FRESHNESS_GIVE_UP_S = 120.0


class CatalogItem(BaseModel):
    item_id: str
    title: str
    genres: list[str]


class Report(BaseModel):
    name: str
    markdown: str  # URL of report.md
    plots: list[str]  # URLs of its PNGs


class UiConfig(BaseModel):
    ingest_port: int
    genres: dict[str, str]  # aff_<slug> feature -> genre name
    devices: list[str]
    users: list[str]  # viewers the candidate generator knows, to pick from
    top_n: int
    freshness_budget_s: float
    freshness_give_up_s: float
    report: Report | None


def latest_report(reports_dir: Path) -> Report | None:
    """The newest evaluation report (``streamrec evaluate``'s ``<data>/reports/<name>/report.md``)."""
    reports = sorted(reports_dir.glob("*/report.md"), key=lambda p: p.stat().st_mtime) if reports_dir.is_dir() else []
    if not reports:
        return None
    folder = reports[-1].parent
    return Report(name=folder.name, markdown=f"/reports/{folder.name}/report.md",
                  plots=[f"/reports/{folder.name}/{p.name}" for p in sorted(folder.glob("*.png"))])


def add_web_ui(app: FastAPI, settings: Settings, auth: HttpAuth, catalog_rows: Callable[[], dict[str, dict]],
               user_ids) -> None:
    """Mount the page, its two endpoints and the reports on ``app``. ``catalog_rows``: the catalog now (it
    changes as items are added: a new mapping each time)."""
    reports_dir = settings.data_path / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)  # served before the first evaluation writes one
    users = sorted(user_ids)[:SAMPLE_USERS]

    sorted_for: list = [None, []]  # [the catalog mapping last sorted, its rows by title]

    def by_title() -> list[dict]:
        rows = catalog_rows()
        if sorted_for[0] is not rows:  # items were added: sort once more (a race only sorts twice)
            sorted_for[:] = [rows, sorted(rows.values(), key=lambda r: str(r["title"]).lower())]
        return sorted_for[1]

    @app.get("/ui/config", response_model=UiConfig, dependencies=[Depends(auth.caller())],
             responses=auth.responses())
    def ui_config() -> UiConfig:
        return UiConfig(ingest_port=settings.ingest.http_port,
                        genres=dict(zip(AFFINITY_COLUMNS, GENRES)),
                        devices=list(DEVICES), users=users, top_n=settings.serving.top_n,
                        freshness_budget_s=FRESHNESS_BUDGET_S, freshness_give_up_s=FRESHNESS_GIVE_UP_S,
                        report=latest_report(reports_dir))

    @app.get("/items", response_model=list[CatalogItem], dependencies=[Depends(auth.caller())],
             responses=auth.responses())
    def items(genre: str | None = Query(None, description="only items of this genre"),
              q: str | None = Query(None, max_length=100, description="words of the title"),
              limit: int = Query(20, ge=1, le=MAX_ITEMS)) -> list[CatalogItem]:
        """Catalog items by title (the ones that can be served), for the page's event buttons."""
        words = (q or "").lower().split()
        out = []
        for row in by_title():
            title = str(row["title"])
            if genre and genre not in (row.get("genres") or ()):
                continue
            if words and not all(w in title.lower() for w in words):
                continue
            out.append(CatalogItem(item_id=row["item_id"], title=title, genres=list(row.get("genres") or ())))
            if len(out) == limit:
                break
        return out

    # After the routes above, which win over the mount; "/ui" redirects to "/ui/" (relative asset paths).
    app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
    app.mount("/reports", StaticFiles(directory=reports_dir), name="reports")
