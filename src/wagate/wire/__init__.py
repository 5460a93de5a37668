"""The GREEN-API contract: chatId rules, request and response models, exact error texts.

GREEN-API's camelCase names live here and nowhere else.
"""

from __future__ import annotations
