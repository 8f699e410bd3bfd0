from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import TenantFixedOnChange
from core.text import count_of
from tenants.models import AllowedOrigin, ApiKey, Realm, Tenant, TenantUser
from tenants.services import create_api_key, revoke_api_key, subject_for


def strings(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise forms.ValidationError(f'{field}: a list of strings, e.g. ["agent"].')
    return value


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
class RealmAdmin(TenantFixedOnChange):
    list_display = ("name", "tenant", "algorithm", "issuer", "active")
    list_filter = ("algorithm", "active", "tenant")
    search_fields = ("name", "tenant__slug", "issuer")


@admin.register(AllowedOrigin)
class AllowedOriginAdmin(TenantFixedOnChange):
    list_display = ("origin", "tenant")
    list_filter = ("tenant",)
    search_fields = ("origin",)


class TenantUserForm(forms.ModelForm):
    class Meta:
        model = TenantUser
        fields = ("tenant", "realm", "subject", "username", "name", "email", "roles", "teams", "login")

    # Read as sets of names by every permission check: a string or a number here was a
    # person with no roles (or a 500 at their next request).
    def clean_roles(self) -> list[str]:
        return strings(self.cleaned_data.get("roles"), "roles")

    def clean_teams(self) -> list[str]:
        return strings(self.cleaned_data.get("teams"), "teams")


@admin.register(TenantUser)
class TenantUserAdmin(admin.ModelAdmin):
    """People are created by their tokens (or here, for local users) and never deleted
    here: deleting one unassigned their tickets and dropped their watches and approvals
    with no event. Unlink the login, or deactivate the realm, to shut someone out."""

    form = TenantUserForm
    list_display = ("username", "name", "email", "tenant", "realm", "last_seen_at")
    list_filter = ("tenant", "realm")
    search_fields = ("username", "name", "email", "subject")
    readonly_fields = ("subject", "last_seen_at")
    list_select_related = ("tenant", "realm__tenant")

    def get_readonly_fields(self, request: HttpRequest, obj: TenantUser | None = None) -> tuple[str, ...]:
        # (realm, subject) is who the person is: changing the realm of an existing record
        # would hand it, with its tickets and notifications, to another realm's tokens.
        # The tenant likewise: the person's tickets, comments and log stay with the first.
        return (*self.readonly_fields, "tenant", "realm") if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: TenantUser, form: object, change: bool) -> None:
        if not change and not obj.subject:
            # The `sub` the embedded realm gives this username. Left empty, the tenant's
            # second person added here broke the per-tenant unique subject (500).
            obj.subject = subject_for(obj.tenant, obj.username)
        super().save_model(request, obj, form, change)


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("tenant", "name", "scopes", "expires_at")

    def clean_scopes(self) -> list[str]:
        # The policy asks `scope in key.scopes`: a string ("events:read webhooks") granted
        # every scope it contains, a number answered 500 to every request with the key.
        scopes = strings(self.cleaned_data.get("scopes"), "scopes")
        known = {name for name, _ in ApiKey.SCOPES}
        unknown = sorted(set(scopes) - known)
        if unknown:
            raise forms.ValidationError(f"Unknown scopes {unknown}; the scopes are {sorted(known)}.")
        return scopes


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created here with their secret shown once, in the success message."""

    form = ApiKeyForm

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
