"""The tenant an operator names on a command line, shared by the commands that take `--tenant`."""

from django.core.management.base import CommandError

from tenants.models import Tenant
from tenants.selectors import tenant_by_slug_or_id


def tenant_named(value: str, hint: str = "") -> Tenant:
    """The tenant an operator named (slug or id), or a `CommandError` saying there is none
    (followed by `hint`, when given)."""
    tenant = tenant_by_slug_or_id(value)
    if tenant is None:
        raise CommandError(f"No tenant {value!r}.{f' {hint}' if hint else ''}")
    return tenant
