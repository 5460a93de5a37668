"""wagate: a self-hosted, GREEN-API-compatible WhatsApp gateway."""

from __future__ import annotations

__version__ = "0.1.0"
