"""``streamrec bench broker`` end to end with tiny numbers: the summary's shape, and a clean restart loses nothing."""
from __future__ import annotations

import json

from streamrec.cli import main


def test_bench_broker_prints_a_summary(capsys):
    code = main(["bench", "broker", "--records", "200", "--runs", "1", "--seconds", "2", "--rate", "200"])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)  # stdout is the summary alone; progress went to stderr
    assert "clean 1/1" in out.err and "kill 1/1" in out.err

    for kind in ("clean", "kill"):
        assert len(summary[kind]["runs"]) == 1
        assert summary[kind]["min"].keys() == summary[kind]["max"].keys()
    [clean] = summary["clean"]["runs"]
    assert (clean["acked"], clean["lost"]) == (200, 0)
    assert {"stop_s", "start_to_ready_s", "snapshot_mb"} <= clean.keys()
    [kill] = summary["kill"]["runs"]
    assert 0 < kill["acked"] <= kill["sent"]
    assert 0 <= kill["lost"] <= kill["acked"]
    assert {"lost_window_s", "restart_to_ready_s", "new_on_lost_offsets"} <= kill.keys()
