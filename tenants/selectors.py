"""Read queries on tenants."""

import uuid

from tenants.models import Tenant


def tenant_by_slug_or_id(value: str) -> Tenant | None:
    """The tenant an operator names on a command line: by slug, or by its UUID."""
    tenant = Tenant.objects.filter(slug=value).first()
    if tenant is None:
        try:
            tenant = Tenant.objects.filter(id=uuid.UUID(value)).first()
        except ValueError:
            return None
    return tenant
