"""Routers, one per area of the API."""

from __future__ import annotations
