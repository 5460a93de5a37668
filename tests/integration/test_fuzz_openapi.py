"""Schema-driven fuzzing of the live server's /openapi.json: no input makes wagate answer 5xx."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tests.integration.conftest import PARTNER_TOKEN, Demo, make_settings, start_demo
from wagate.config import Settings
from wagate.http import create_app

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20250101,
        "generation": {"mode": "all", "max-examples": 10},
    }
)
RAW_SCHEMA = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(RAW_SCHEMA, config=CONFIG)

STATS: dict[str, Any] = {"calls": 0, "by_status": {}}


@pytest.fixture(scope="module")
def fuzz_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    demo = start_demo(make_settings(tmp_path_factory.mktemp("fuzz"), rate_limits_enabled=False))
    try:
        yield demo
    finally:
        demo.server.stop()


@schema.parametrize()
@schema.given(credentials=st.sampled_from(["valid", "random", "valid", "wrong-token"]))
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_server_answer_5xx(case: Any, credentials: str, fuzz_demo: Demo) -> None:
    valid = {"idInstance": str(fuzz_demo.instance.id), "apiTokenInstance": fuzz_demo.instance.api_token, "partnerToken": PARTNER_TOKEN}
    if case.path_parameters and credentials != "random":
        for k in list(case.path_parameters):
            if k in valid and not (credentials == "wrong-token" and k != "idInstance"):
                case.path_parameters[k] = valid[k]
    started = time.perf_counter()
    response = case.call(base_url=fuzz_demo.url, timeout=30)
    STATS["calls"] += 1
    key = f"{case.method} {case.path} {response.status_code}"
    STATS["by_status"][key] = STATS["by_status"].get(key, 0) + 1
    elapsed = time.perf_counter() - started
    if elapsed > 1:
        print("SLOW", case.method, case.formatted_path, case.query, elapsed)
    case.validate_response(response, checks=[not_a_server_error])


def test_zz_stats() -> None:
    import pprint
    pprint.pprint(STATS)
