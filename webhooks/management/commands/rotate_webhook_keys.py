"""`manage.py rotate_webhook_keys`: re-encrypt every endpoint secret under the newest key."""

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from idempotency.models import IdempotencyRecord
from idempotency.services import SEALED_PREFIX
from webhooks.crypto import reencrypt
from webhooks.models import Endpoint


class Command(BaseCommand):
    help = (
        "Re-encrypt every webhook endpoint secret (and every stored Idempotency-Key answer that shows one) "
        "under the first key of WEBHOOKS_SECRET_KEYS. "
        "Rotate a key by putting a new one first (keep the old one after it), run this, then drop the old key."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = 0
        with transaction.atomic():
            for endpoint in Endpoint.objects.select_for_update().only(
                "id", "secret_encrypted", "previous_secret_encrypted"
            ):
                endpoint.secret_encrypted = reencrypt(endpoint.secret_encrypted)
                if endpoint.previous_secret_encrypted:
                    endpoint.previous_secret_encrypted = reencrypt(endpoint.previous_secret_encrypted)
                endpoint.save(update_fields=["secret_encrypted", "previous_secret_encrypted"])
                count += 1
            # The first answers of endpoint creations and rotations kept for their
            # Idempotency-Key (24 h) show a secret too: sealed under the same keys.
            answers = 0
            for record in IdempotencyRecord.objects.select_for_update().filter(body__startswith=SEALED_PREFIX):
                record.body = SEALED_PREFIX + reencrypt(record.body.removeprefix(SEALED_PREFIX))
                record.save(update_fields=["body"])
                answers += 1
        self.stdout.write(f"event=webhook_keys_rotated endpoints={count} idempotent_answers={answers}")
