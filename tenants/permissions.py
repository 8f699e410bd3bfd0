"""Role checks shared by the API views. The rules are listed in docs/api.md."""

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from tenants.callers import Caller, PartnerKeyCaller
from tenants.envelope import ApiError


class IsTenantCaller(BasePermission):
    def has_permission(self, request: Request, view: object) -> bool:
        return isinstance(request.auth, Caller | PartnerKeyCaller)


def require_agent(caller: Caller) -> None:
    if not caller.is_agent:
        raise ApiError(403, "FORBIDDEN", "This needs the `agent` or `admin` role.")


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise ApiError(403, "FORBIDDEN", "This needs the `admin` role.")
