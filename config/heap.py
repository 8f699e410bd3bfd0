"""Python's cycle collector in a served worker process.

A worker with thousands of open streams holds a large heap of long-lived objects, and
every request leaves some garbage in reference cycles (Django's and DRF's request objects,
serializer fields, the handler's tasks): a few hundred objects per ticket change. With
Python's defaults the youngest generation is collected every 700 new objects, so such
cycles are still alive at a collection or two, are promoted, and set off a full
collection about every second and a half at 20 changes/s, which walks the whole heap: 60
to 230 ms with the event loop stopped, 4.2 s of a 30 s benchmark run, and most of the
p99 of a change reaching its streams (docs/benchmarks.md, "The cycle collector").

So, once the application is loaded:

- the objects of the start-up (modules, Django's and DRF's registries, the URL
  resolver) are moved out of the collector's sight with `gc.freeze()`: they live as long
  as the process, and a full collection no longer walks them;
- the youngest generation is collected after `settings.GC_GEN0_THRESHOLD` (10,000) new
  objects instead of 700: a request's cycles are then mostly dead by the next collection
  and freed young, never promoted, and full collections become rare. Each young
  collection walks more objects (a few milliseconds), and garbage in cycles waits that
  much longer to be freed (a few megabytes at most).
"""

from __future__ import annotations

import gc

from django.conf import settings


def settle_heap() -> None:
    """Freeze the start-up heap and raise the youngest generation's threshold (see above)."""
    threshold = settings.GC_GEN0_THRESHOLD
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, *gc.get_threshold()[1:])
