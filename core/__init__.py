"""Plumbing that belongs to no feature app (see /work/shared/conventions.md)."""
