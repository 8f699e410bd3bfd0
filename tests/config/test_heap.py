"""The cycle collector of a served worker (config.heap): the start-up heap frozen and the
youngest generation's threshold raised, as the operator's setting says; and only in a
served worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SERVED = "from config.serve import served_application; served_application()"
IMPORTED = "import config.asgi"


def collector_after(setup: str, **env: str) -> dict[str, int]:
    """The collector's youngest threshold and frozen count in a new process after `setup`."""
    probe = f"import gc, json; {setup}; print(json.dumps([gc.get_threshold()[0], gc.get_freeze_count()]))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, "SECRET_KEY": "test-only-secret-key", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    threshold, frozen = json.loads(result.stdout.strip().splitlines()[-1])
    return {"threshold": threshold, "frozen": frozen}


@pytest.mark.parametrize(("setting", "threshold"), [(None, 2_000), ("25000", 25_000)])
def test_a_served_worker_freezes_its_start_up_heap_and_collects_young_objects_less_often(setting, threshold):
    collector = collector_after(SERVED, **({"GC_GEN0_THRESHOLD": setting} if setting else {}))
    assert collector["threshold"] == threshold
    # Django, DRF and the URL resolver: tens of thousands of objects no collection walks.
    assert collector["frozen"] > 20_000


def test_a_threshold_of_zero_leaves_pythons_collector_as_it_is():
    assert collector_after(SERVED, GC_GEN0_THRESHOLD="0") == {"threshold": 700, "frozen": 0}


def test_importing_the_application_alone_leaves_the_collector_as_it_is():
    """A process that imports the application in the middle of its life (a test run) must
    not freeze what it holds by then: frozen objects are never collected, nor the database
    connections in their cycles."""
    assert collector_after(IMPORTED) == {"threshold": 700, "frozen": 0}
