"""Read queries on tenants."""

import uuid

from tenants.models import Tenant, TenantUser


def tenant_by_slug_or_id(value: str) -> Tenant | None:
    """The tenant an operator names on a command line: by slug, or by its UUID."""
    tenant = Tenant.objects.filter(slug=value).first()
    if tenant is None:
        try:
            tenant = Tenant.objects.filter(id=uuid.UUID(value)).first()
        except ValueError:
            return None
    return tenant


def team_agents(tenant_id: uuid.UUID, team: str) -> list[TenantUser]:
    """The agents and admins of a tenant's team (none for no team)."""
    if not team:
        return []
    users = TenantUser.objects.filter(tenant_id=tenant_id)
    return [u for u in users if team in (u.teams or []) and {"agent", "admin"} & set(u.roles or [])]
