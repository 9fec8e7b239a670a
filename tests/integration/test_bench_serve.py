"""``streamrec bench serve --catalogs`` end to end at a tiny size: the summary's shape and the clean-up.

No timing is asserted: the goals' verdicts (exit code 0 or 1) depend on the machine, not on the code."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from serving.pipeline import STAGES
from streamrec.cli import main

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]


def test_catalog_mode_prints_a_row_per_rate_with_the_floor(tmp_path, capsys):
    figures = tmp_path / "bench.json"
    code = main(["bench", "serve", "--catalogs", "300", "--catalog-users", "30", "--mode", "off", "--floor",
                 "--rates", "5,10", "--seconds", "2", "--warmup-seconds", "1", "--n-users", "10",
                 "--json", str(figures)])
    out = capsys.readouterr()
    assert code in (0, 1), out.err

    summary = json.loads(figures.read_text())
    rows = summary["rows"]
    assert [(r["catalog"], r["mode"], r["rps_target"]) for r in rows] == [(300, "off", 5.0), (300, "off", 10.0)]
    for row in rows:
        assert row["answered"] > 0 and row["errors"] == {}
        assert {"p50", "p95", "p99"} <= row["e2e_ms"].keys()
        assert set(row["stages_ms"]) == set(STAGES)
        assert row["rerank_statuses"] == {"disabled": row["answered"]}
        assert {"p50", "p99"} <= row["floor_ms"].keys() and row["floor_ms"]["errors"] == {}
        assert row["p99_over_floor"] > 0
    assert summary["goals"][0].startswith("goal p99 <= 20 ms")

    table = out.out[out.out.index(" catalog mode"):].splitlines()
    assert "API/fl" in table[0] and [line.split()[:3] for line in table[1:3]] == [["300", "off", "5"],
                                                                                  ["300", "off", "10"]]
    # Everything started was stopped and the temporary data dir removed.
    data_dir = Path(re.search(r"\[catalog 300\] data dir (\S+)", out.out).group(1))
    assert not data_dir.exists()
