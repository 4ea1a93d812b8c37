"""The freshness benchmark's pure pieces: the statuses it writes read as the phases the sidebar
and widgets show, and its percentiles."""

from __future__ import annotations

from benchmarks.freshness import percentile, status, workspace
from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.commands import phase


def stored(ready: bool) -> StoredWorkspace:
    data = workspace("w")
    data["metadata"].update(generation=1, resourceVersion="1")
    data["status"] = status("marker-1", ready)
    return StoredWorkspace(data)


def test_the_written_statuses_toggle_between_ready_and_pending():
    assert phase(stored(True)) == "ready"
    assert phase(stored(False)) == "pending"
    assert all(c["message"] == "marker-1" for c in status("marker-1", False)["conditions"])


def test_percentiles_interpolate():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 95) == 5.0
