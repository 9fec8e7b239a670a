"""The CLI shows a library's warnings but not its deprecation notices, even after a library resets the warning
filters (feast sets DeprecationWarning to "once" when imported)."""
from __future__ import annotations

import warnings

from streamrec import cli


def test_deprecations_are_dropped_where_shown_and_other_warnings_shown(monkeypatch):
    shown = []
    with warnings.catch_warnings():
        monkeypatch.setattr(warnings, "showwarning", cli._without_deprecations(lambda m, c, *a, **k: shown.append(str(m))))
        warnings.simplefilter("once", DeprecationWarning)  # what importing feast does
        warnings.simplefilter("always", UserWarning)
        warnings.warn("fetch_arrow_table() is deprecated", DeprecationWarning, stacklevel=1)
        warnings.warn("going away", PendingDeprecationWarning, stacklevel=1)
        warnings.warn("the catalog has no year for 3 items", UserWarning, stacklevel=1)
    assert shown == ["the catalog has no year for 3 items"]
