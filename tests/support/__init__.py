"""Helpers shared by the test suites: a live server, webhook receivers, images."""

from __future__ import annotations
