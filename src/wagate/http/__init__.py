"""The HTTP edge: GREEN-API routes, partner routes, avatar files, health and metrics."""

from __future__ import annotations

from wagate.http.app import create_app

__all__ = ["create_app"]
