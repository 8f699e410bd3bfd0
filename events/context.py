"""Who is acting for the changes being recorded: set by services around their writes,
read by the event recorder, so a model signal can name the actor without being told."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from tenants.models import TenantUser


@dataclass(frozen=True)
class Acting:
    actor: TenantUser | None = None
    support: bool = False


_acting: ContextVar[Acting] = ContextVar("acting", default=Acting())  # noqa: B039  (frozen, immutable)


def current_acting() -> Acting:
    return _acting.get()


@contextmanager
def acting_as(actor: TenantUser | None, *, support: bool = False) -> Iterator[None]:
    token = _acting.set(Acting(actor=actor, support=support))
    try:
        yield
    finally:
        _acting.reset(token)
