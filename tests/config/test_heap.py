"""The cycle collector of a served worker (config.heap): the start-up heap frozen and the
youngest generation's threshold raised, as the operator's setting says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = (
    "import gc, json; import config.asgi; "
    "print(json.dumps({'threshold': gc.get_threshold()[0], 'frozen': gc.get_freeze_count()}))"
)


def collector_of_a_worker(**env: str) -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**os.environ, "SECRET_KEY": "test-only-secret-key", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("setting", "threshold"), [(None, 2_000), ("25000", 25_000)])
def test_a_worker_freezes_its_start_up_heap_and_collects_young_objects_less_often(setting, threshold):
    collector = collector_of_a_worker(**({"GC_GEN0_THRESHOLD": setting} if setting else {}))
    assert collector["threshold"] == threshold
    # Django, DRF and the URL resolver: tens of thousands of objects no collection walks.
    assert collector["frozen"] > 20_000


def test_a_threshold_of_zero_leaves_pythons_collector_as_it_is():
    assert collector_of_a_worker(GC_GEN0_THRESHOLD="0") == {"threshold": 700, "frozen": 0}
