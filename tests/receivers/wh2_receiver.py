"""Runs the official `whatsapp-api-webhook-server-python-v2` receiver in its own virtualenv.

Usage: python wh2_receiver.py PORT AUTH_TOKEN OUTPUT_FILE. Each event is appended to OUTPUT_FILE
as one JSON line `{"type": ..., "data": ...}`.
"""

from __future__ import annotations

import json
import sys

from whatsapp_api_webhook_server_python_v2 import GreenAPIWebhookServer


def main() -> None:
    port, token, output = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    def on_event(webhook_type: str, data: dict) -> None:  # type: ignore[type-arg]
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"type": webhook_type, "data": data}) + "\n")

    GreenAPIWebhookServer(
        on_event, host="127.0.0.1", port=port, webhook_auth_header=token, return_keys_by_alias=True
    ).start()


if __name__ == "__main__":
    main()
