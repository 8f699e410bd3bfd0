"""The webhook figures of `/metrics`, read from the delivery log when it is scraped: the
deliverer is a process of its own (`manage.py deliver_webhooks`, maybe in another
container), so its work is counted from its durable records, not from its memory."""

import logging
from collections.abc import Iterator

from django.db import connection
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from webhooks.models import Delivery, DeliveryAttempt

logger = logging.getLogger(__name__)


class WebhookCollector:
    def collect(self) -> Iterator[Metric]:
        try:
            by_outcome = dict(DeliveryAttempt.objects.values_list("outcome").annotate(n=Count("id")))
            oldest = Delivery.objects.filter(state=Delivery.State.PENDING).aggregate(at=Min("created_at"))["at"]
        except Exception as error:
            # The database is away: the rest of /metrics still answers (readiness says why).
            logger.warning("event=webhook_metrics_unavailable error=%r", error)
            return
        finally:
            connection.close()  # a scrape thread's connection goes back to the pool
        attempts = CounterMetricFamily(
            "ticketing_webhook_deliveries",
            "Webhook delivery attempts in the delivery log, by outcome (success, http_error, timeout, ...).",
            labels=["outcome"],
        )
        for outcome in DeliveryAttempt.Outcome.values:
            attempts.add_metric([outcome], by_outcome.get(outcome, 0))
        yield attempts
        age = GaugeMetricFamily(
            "ticketing_webhook_queue_age_seconds",
            "Age of the oldest webhook delivery still waiting to be sent (0: none waiting).",
        )
        age.add_metric([], (timezone.now() - oldest).total_seconds() if oldest else 0.0)
        yield age
