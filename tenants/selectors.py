"""Read queries on tenants."""

import uuid

from core import statements
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


def tenant_user_by_id_or_username(tenant_id: uuid.UUID, value: str) -> TenantUser | None:
    """A user of the tenant named in a request body by id or by username (an id wins).
    Hand-written (core.statements): assigning a ticket and watching one read it."""
    try:
        key = uuid.UUID(value)
    except ValueError:
        key = None
    where = "tenant_id = %s AND username = %s"
    params = [statements.value_for(TenantUser, "tenant", tenant_id), value.strip()]
    if key is not None:
        where = "tenant_id = %s AND (username = %s OR id = %s)"
        params.append(statements.value_for(TenantUser, "id", key))
    users = statements.select(TenantUser, where, params)
    return next((u for u in users if u.pk == key), users[0] if users else None)
