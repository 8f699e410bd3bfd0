"""The delivery-latency histogram is fed from a per-process tally (core.metrics.DeliveryTally):
what reaches the histogram must be exactly what observing every frame would have given."""

import asyncio

from prometheus_client import CollectorRegistry, Histogram

from core.metrics import DELIVERY_FLUSH_SECONDS, DeliveryTally

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENCIES = [0.0, 0.001, 0.005, 0.0051, 0.02, 0.3, 0.3, 0.9999, 1.0, 7.5, 59.0, 60.0, 61.0, 3600.0]


def histogram() -> Histogram:
    return Histogram("delivery", "test", ["kind"], buckets=BUCKETS, registry=CollectorRegistry())


def samples(metric: Histogram) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metric.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_a_flushed_tally_equals_observing_every_frame() -> None:
    direct, tallied = histogram(), histogram()
    tally = DeliveryTally(tallied)
    for seconds in LATENCIES:
        direct.labels("list").observe(seconds)
        direct.labels("notifications").observe(seconds * 2)

    async def deliver() -> None:
        for seconds in LATENCIES:
            tally.add("list", seconds)
            tally.add("notifications", seconds * 2)
        tally.flush()

    asyncio.run(deliver())
    assert samples(tallied) == samples(direct)
    assert samples(tallied)[("delivery_count", (("kind", "list"),))] == len(LATENCIES)


def test_a_tally_reaches_the_histogram_within_the_flush_period_on_its_own() -> None:
    tallied = histogram()
    tally = DeliveryTally(tallied)
    count = ("delivery_count", (("kind", "list"),))

    async def deliver() -> tuple[float, float]:
        for seconds in LATENCIES:
            tally.add("list", seconds)
        before = samples(tallied).get(count, 0.0)
        await asyncio.sleep(DELIVERY_FLUSH_SECONDS + 0.2)
        return before, samples(tallied)[count]

    before, after = asyncio.run(deliver())
    assert (before, after) == (0.0, len(LATENCIES))


def test_frames_counted_on_a_loop_that_ended_before_its_flush_are_not_lost() -> None:
    tallied = histogram()
    tally = DeliveryTally(tallied)

    async def one_frame() -> None:
        tally.add("list", 0.2)

    asyncio.run(one_frame())  # this loop ends before its flush is due

    async def another_frame() -> None:
        tally.add("list", 0.3)
        await asyncio.sleep(DELIVERY_FLUSH_SECONDS + 0.2)

    asyncio.run(another_frame())
    values = samples(tallied)
    assert values[("delivery_count", (("kind", "list"),))] == 2
    assert values[("delivery_sum", (("kind", "list"),))] == 0.5


def test_outside_an_event_loop_a_frame_is_observed_at_once() -> None:
    tallied = histogram()
    DeliveryTally(tallied).add("partner_ws", 0.07)
    assert samples(tallied)[("delivery_count", (("kind", "partner_ws"),))] == 1
