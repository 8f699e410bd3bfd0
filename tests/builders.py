"""Small builders for tests: tenants with a realm and named users, tokens, headers.

Every test world has two tenants, `acme` and `globex`, each with the same cast (admin,
alice the agent of team operation, carol the agent of team network, bob and dave the end
users), so any test can check that the other tenant sees nothing."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from django.db import connection

from tenants.models import AllowedOrigin, Realm, Tenant, TenantUser
from tenants.services import issue_token, subject_for

CAST = {
    "admin": (["admin", "agent", "support"], ["operation", "network"]),
    "alice": (["agent"], ["operation"]),
    "carol": (["agent"], ["network"]),
    "bob": (["user"], []),
    "dave": (["user"], []),
}


@dataclass
class World:
    tenant: Tenant
    realm: Realm
    users: dict[str, TenantUser] = field(default_factory=dict)

    def token(
        self, username: str, *, ttl: int = 3600, roles: list[str] | None = None, teams: list[str] | None = None
    ) -> str:
        default_roles, default_teams = CAST.get(username, (["user"], []))
        token = issue_token(
            realm=self.realm,
            username=username,
            roles=roles if roles is not None else default_roles,
            teams=teams if teams is not None else default_teams,
            ttl_seconds=ttl,
        )
        if threading.current_thread() is not threading.main_thread():
            # A test's helper thread: give back the connection the user lookup took, or it
            # stays out of the pool, on the test database, until the session ends.
            connection.close()
        return token

    def headers(self, username: str, **kwargs: Any) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token(username, **kwargs)}",
            "x-tenantid": str(self.tenant.id),
            "realmname": self.realm.name,
        }

    def raw_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "x-tenantid": str(self.tenant.id), "realmname": self.realm.name}


def make_world(slug: str, *, origins: tuple[str, ...] = ()) -> World:
    tenant = Tenant.objects.create(slug=slug, name=slug.title())
    realm = Realm.objects.create(
        tenant=tenant,
        name="main",
        secret=f"{slug}-secret-0123456789-abcdefghijklmnop",
        issuer=f"https://id.example/realms/{slug}",
    )
    for origin in origins:
        AllowedOrigin.objects.create(tenant=tenant, origin=origin)
    world = World(tenant=tenant, realm=realm)
    for username, (roles, teams) in CAST.items():
        world.users[username] = TenantUser.objects.create(
            tenant=tenant,
            realm=realm,
            subject=subject_for(tenant, username),
            username=username,
            name=username.title(),
            email=f"{username}@{slug}.example",
            roles=roles,
            teams=teams,
        )
    return world


def signed(claims: dict[str, Any], key: str, algorithm: str = "HS256", headers: dict | None = None) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def base_claims(world: World, username: str = "alice", **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": subject_for(world.tenant, username),
        "preferred_username": username,
        "realm_access": {"roles": ["agent"]},
        "teams": ["operation"],
        "iat": now,
        "exp": now + 600,
        "iss": world.realm.issuer,
    }
    claims.update(overrides)
    return claims
