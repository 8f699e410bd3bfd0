"""Python's cycle collector in a served worker process.

A worker with thousands of open streams holds a large heap of long-lived objects, and
every request leaves some garbage in reference cycles (Django's and DRF's request objects,
serializer fields, the handler's tasks): a few hundred objects per ticket change. With
Python's defaults the youngest generation is collected every 700 new objects, so such
cycles are still alive at a collection or two, are promoted, and set off a full
collection about every second and a half at 20 changes/s, which walks the whole heap: 60
to 230 ms with the event loop stopped, 4.2 s of the worker's life in one benchmark run,
and much of the p99 of a change reaching its streams (docs/benchmarks.md, "The cycle
collector").

So, once a served worker has loaded the application (`config.serve.served_application`,
not on import of `config.asgi`):

- the objects of the start-up (modules, Django's and DRF's registries, the URL
  resolver) are moved out of the collector's sight with `gc.freeze()`: they live as long
  as the process, and a full collection no longer walks them;
- the youngest generation is collected after `settings.GC_GEN0_THRESHOLD` (2,000) new
  objects instead of 700: more of a request's cycles are dead by the next collection and
  freed young rather than promoted, so full collections come less often. Each young
  collection walks more objects, and garbage in cycles waits longer to be freed: a
  higher threshold cut the tail further (10,000: write p99 about 100-165 ms against
  290-350 with Python's defaults) but held about 4 MB more per worker, 2 KB per stream
  at 2,000 streams; 2,000 kept most of the gain for 0.5 KB (docs/benchmarks.md).
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
