"""The DRF side of the authorization policy (tenants.policy), and role checks that
services keep for callers that do not come through a route (commands, the dashboard)."""

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from core.http import ApiError
from tenants.callers import Caller, PartnerKeyCaller
from tenants.policy import ADMINS, AGENTS, authorize, route_of, rules_for


class IsTenantCaller(BasePermission):
    """Every DRF view's permission: an authenticated tenant caller that the policy lets
    call this route and method (403 in the envelope otherwise)."""

    def has_permission(self, request: Request, view: object) -> bool:
        caller = request.auth
        if not isinstance(caller, Caller | PartnerKeyCaller):
            return False
        method = request.method or "GET"
        route = route_of(request._request)
        if method == "OPTIONS":
            # Metadata of the route: for whoever may call one of its methods.
            rules = rules_for(route) or {}
            if any(_may(caller, route, m) for m in rules):
                return True
        elif not hasattr(view, method.lower()):
            return True  # DRF answers 405 with the Allow header
        authorize(caller, route, method)
        return True


def _may(caller: Caller | PartnerKeyCaller, route: str, method: str) -> bool:
    try:
        authorize(caller, route, method)
    except ApiError:
        return False
    return True


# For services, which are also called without a route (commands, the dashboard, the SLA
# monitor): the same role sets as the policy's, so the two cannot drift apart.


def require_agent(caller: Caller) -> None:
    if not caller.roles & AGENTS:
        raise ApiError(403, "FORBIDDEN", "This needs the `agent` or `admin` role.")


def require_admin(caller: Caller) -> None:
    if not caller.roles & ADMINS:
        raise ApiError(403, "FORBIDDEN", "This needs the `admin` role.")
