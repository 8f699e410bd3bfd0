from django.contrib import admin

from tenants.models import AllowedOrigin, Realm, Tenant, TenantUser


class RealmInline(admin.StackedInline):
    model = Realm
    extra = 0


class AllowedOriginInline(admin.TabularInline):
    model = AllowedOrigin
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "id", "active", "created_at")
    list_filter = ("active",)
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
    list_display = ("username", "name", "email", "tenant", "last_seen_at")
    list_filter = ("tenant",)
    search_fields = ("username", "name", "email", "subject")
    readonly_fields = ("subject", "last_seen_at")
