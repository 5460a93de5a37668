"""Use cases and domain values. Nothing here imports a web framework, a SQL driver or httpx."""

from __future__ import annotations
