"""In Chromium: when the backend's server goes away, the page keeps what it showed and a
banner says since when the backend is unreachable; when it is back, the banner goes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.redis_server import free_port, private_redis

from .conftest import Served
from .test_browser import css, until

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_a_stopped_backend_shows_the_stale_banner_over_the_last_page(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.support.ui import Select

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0?retry_for=0.5&prefix=dash-e2e-stale"
    with private_redis(port) as server:
        served = Served(url, tmp_path / "dashboard.log")
        try:
            browser.get(served.address + "/")
            until(browser, lambda b: "Queues" in css(b, "main").text, "the overview")
            Select(css(browser, "#live-every")).select_by_value("2")
            assert not css(browser, "#stale").is_displayed()
            server.kill()
            server.wait(10)
            until(browser, lambda b: css(b, "#stale").is_displayed(), "the stale banner")
            assert "Backend unreachable since" in css(browser, "#stale").text
            assert "retrying" in css(browser, "#stale").text
            assert "Queues" in css(browser, "main").text  # the last state, kept
            with private_redis(port):
                until(browser, lambda b: not css(b, "#stale").is_displayed(), "the banner gone")
        finally:
            served.stop()
