from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.text import count_of
from tenants.models import AllowedOrigin, ApiKey, Realm, Tenant, TenantUser
from tenants.services import create_api_key, revoke_api_key


class RealmInline(admin.StackedInline):
    model = Realm
    extra = 0


class AllowedOriginInline(admin.TabularInline):
    model = AllowedOrigin
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "id", "active", "tier", "created_at")
    list_filter = ("active", "tier")
    search_fields = ("slug", "name", "id")
    inlines = [RealmInline, AllowedOriginInline]


@admin.register(Realm)
class RealmAdmin(admin.ModelAdmin):
    list_display = ("name", "tenant", "algorithm", "issuer", "active")
    list_filter = ("algorithm", "active", "tenant")
    search_fields = ("name", "tenant__slug", "issuer")


@admin.register(AllowedOrigin)
class AllowedOriginAdmin(admin.ModelAdmin):
    list_display = ("origin", "tenant")
    list_filter = ("tenant",)
    search_fields = ("origin",)


@admin.register(TenantUser)
class TenantUserAdmin(admin.ModelAdmin):
    list_display = ("username", "name", "email", "tenant", "realm", "last_seen_at")
    list_filter = ("tenant", "realm")
    search_fields = ("username", "name", "email", "subject")
    readonly_fields = ("subject", "last_seen_at")
    list_select_related = ("tenant", "realm__tenant")

    def get_readonly_fields(self, request: HttpRequest, obj: TenantUser | None = None) -> tuple[str, ...]:
        # (realm, subject) is who the person is: changing the realm of an existing record
        # would hand it, with its tickets and notifications, to another realm's tokens.
        return (*self.readonly_fields, "realm") if obj else self.readonly_fields


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created here with their secret shown once, in the success message."""

    list_display = ("name", "tenant", "prefix", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("tenant", ("revoked_at", admin.EmptyFieldListFilter), ("expires_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "prefix", "tenant__slug")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("tenant", "name", "scopes", "expires_at", "prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        return (*self.readonly_fields, "tenant", "scopes") if obj else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form: object, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, full = create_api_key(
            tenant=obj.tenant, name=obj.name, scopes=obj.scopes or None, expires_at=obj.expires_at
        )
        obj.pk, obj.prefix = key.pk, key.prefix
        self.message_user(
            request, f"API key created. Copy it now, it will not be shown again: {full}", messages.WARNING
        )

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            revoke_api_key(key=key)
        self.message_user(request, f"{count_of(queryset.count(), 'key')} revoked.")
