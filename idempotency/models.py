"""The stored first answer to a write sent with an `Idempotency-Key` (see services)."""

from django.db import models


class IdempotencyRecord(models.Model):
    """The first successful answer to a write made with an `Idempotency-Key`: written in
    the transaction of the change it answers, so either both exist or neither does.
    Keys are per (tenant, caller): another caller's same key is another record."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    # `user:<id>` for a person, `apikey:<id>` for a partner key (tenants.callers).
    caller = models.CharField(max_length=80)
    key = models.CharField(max_length=255)
    # SHA-256 of method, path and the canonical request body: a repeat must send the same.
    fingerprint = models.CharField(max_length=64)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=2000)
    status_code = models.PositiveSmallIntegerField()
    body = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "caller", "key"], name="idempotency_key_unique_per_caller")
        ]

    def __str__(self) -> str:
        return f"{self.caller} {self.key}"
