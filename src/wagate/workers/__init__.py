"""Background loops that run inside the server process: one responsibility each."""

from __future__ import annotations
