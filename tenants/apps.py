from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants and callers"

    def ready(self) -> None:
        from tenants import cors  # noqa: F401  (connects the per-tenant CORS check)
