"""`manage.py rotate_webhook_keys`: re-encrypt every endpoint secret under the newest key."""

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from webhooks.crypto import reencrypt
from webhooks.models import Endpoint


class Command(BaseCommand):
    help = (
        "Re-encrypt every webhook endpoint secret under the first key of WEBHOOKS_SECRET_KEYS. "
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
        self.stdout.write(f"event=webhook_keys_rotated endpoints={count}")
