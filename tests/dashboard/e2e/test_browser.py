"""The dashboard in real headless Chromium, on a real ``pigeon dashboard`` process and real
worker processes, on SQLite, Redis and PostgreSQL: messages that succeed, fail and retry,
get cancelled and dead-lettered; the browser reads the overview (live, with its charts),
opens a message's detail, requeues a dead letter and sees it succeed, and pauses a queue
and sees that nothing of it runs until it is resumed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pigeon
from tests.processes import Workers, eventually

from .app import build
from .conftest import Served

pytestmark = [pytest.mark.slow, pytest.mark.browser]

WAIT = 30.0


def staleness_of(element: Any) -> Any:
    from selenium.webdriver.support.expected_conditions import staleness_of

    return staleness_of(element)


def until(browser: Any, check: Any, what: str, timeout: float = WAIT) -> Any:
    """Wait for ``check(browser)`` to be truthy, with a deadline (selenium's wait)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A live refresh may replace <main> between finding an element and reading it: look again.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    wait = WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=ignored)
    return wait.until(check, message=what)


def css(browser: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, selector)


def all_css(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(browser.find_elements(By.CSS_SELECTOR, selector))


def state_of(app: pigeon.App, mid: str) -> str | None:
    info = app.backend_call_sync(lambda b: b.inspect(mid), timeout=10)
    return info.state if info is not None else None


@dataclass
class Visit:
    """The browser on one dashboard, and the App the test sends with."""

    browser: Any
    served: Served
    sender: pigeon.App
    screenshots: Path | None

    def open(self, path: str) -> None:
        self.browser.get(self.served.address + path)

    def shoot(self, name: str) -> None:
        """A screenshot of the whole page, when PIGEON_DASHBOARD_SCREENSHOTS says where."""
        if self.screenshots is None:
            return
        height = self.browser.execute_script("return document.documentElement.scrollHeight")
        self.browser.set_window_size(1280, max(600, min(int(height) + 160, 2400)))
        self.browser.save_screenshot(str(self.screenshots / f"{name}.png"))
        self.browser.set_window_size(1280, 900)

    def submit(self, button: Any, what: str) -> None:
        """Click a form's button and wait for the page it leads to."""
        button.click()
        until(self.browser, staleness_of(button), what)


def send_every_kind(sender: pigeon.App, marker: Path) -> dict[str, str]:
    """Messages that succeed, retry, die, get cancelled: the ids of the dead and the
    cancelled, once every one has settled."""
    tasks = sender.tasks
    done = [tasks["e2e.ok"].send(n) for n in range(12)]
    flaky = tasks["e2e.flaky"].send("second time lucky")
    boom = tasks["e2e.boom"].send("<script>alert(1)</script>", pigeon.Secret("hunter2"))
    fixed = tasks["e2e.until_fixed"].send(str(marker))
    paced = [tasks["e2e.paced"].send(n) for n in range(4)]
    later = tasks["e2e.ok"].options(delay=3600).send(99)
    assert later.cancel().result(timeout=WAIT) is True
    for p in [*done, flaky, *paced]:
        p.result(timeout=WAIT)
    eventually(lambda: state_of(sender, boom.id) == "dead", "the boom to be dead-lettered")
    eventually(lambda: state_of(sender, fixed.id) == "dead", "until_fixed dead-lettered")
    assert state_of(sender, later.id) == "cancelled"
    return {"boom": boom.id, "fixed": fixed.id}


def overview_refreshes_with_its_charts(visit: Visit) -> None:
    from selenium.webdriver.support.ui import Select

    browser = visit.browser
    visit.open("/")
    until(browser, lambda b: css(b, "#queues"), "the queue table")
    assert "work" in css(browser, "#queues").text
    until(browser, lambda b: all_css(b, "#charts svg.chart"), "the charts")
    visit.shoot("overview")
    Select(css(browser, "#live-every")).select_by_value("2")
    before = css(browser, "main").get_attribute("data-refreshed") or "0"
    until(
        browser,
        lambda b: (css(b, "main").get_attribute("data-refreshed") or "0") != before,
        "the overview to refresh by itself",
    )


def filtered_list_leads_to_an_escaped_detail(visit: Visit, mid: str) -> None:
    from selenium.webdriver.support.ui import Select

    browser = visit.browser
    visit.open("/messages")
    form = css(browser, "form.filter")
    Select(form.find_element("name", "state")).select_by_value("dead")
    visit.submit(form.find_element("css selector", 'button[type="submit"]'), "the filtered list")
    assert "state=dead" in browser.current_url
    assert "e2e.ok" not in css(browser, "main table").text  # only the dead ones
    until(browser, lambda b: all_css(b, f'a[href="/messages/{mid}"]'), "the dead row")
    visit.shoot("messages")
    css(browser, f'a[href="/messages/{mid}"]').click()
    until(browser, lambda b: "Traceback" in b.page_source, "the detail page")
    detail = css(browser, "main").text
    assert "<script>alert(1)</script>" in detail  # shown as text, never run
    assert "hunter2" not in browser.page_source
    assert "***" in detail
    visit.shoot("message")


def requeued_dead_letter_succeeds(visit: Visit, mid: str, marker: Path) -> None:
    browser = visit.browser
    visit.open("/dead")
    until(browser, lambda b: all_css(b, f'input[value="{mid}"]'), "the dead letter")
    visit.shoot("dead")
    marker.write_text("fixed")
    css(browser, f'input[name="id"][value="{mid}"]').click()
    visit.submit(css(browser, 'button[value="requeue"]'), "the page after the requeue")
    assert not all_css(browser, f'input[value="{mid}"]')
    visit.open(f"/messages/{mid}")
    until(browser, lambda b: "succeeded" in css(b, "td.state").text, "the requeued success")


def paused_queue_runs_nothing_until_resumed(visit: Visit) -> None:
    browser = visit.browser
    visit.open("/")
    form = css(browser, "h2 + form.pause")
    form.find_element("name", "queue").send_keys("work")
    form.find_element("name", "reason").send_keys("deploy")
    visit.submit(form.find_element("css selector", "button"), "the page after the pause")
    until(browser, lambda b: "paused" in css(b, "#queues").text, "the pause shown")
    assert "work" in visit.sender.backend_call_sync(lambda b: b.paused(), timeout=10)
    held = [visit.sender.tasks["e2e.ok"].send(n) for n in range(3)]
    until(browser, lambda b: "3" in css(b, "#queues tr.paused td.pending").text, "3 pending")
    # A worker fetches every second at most (its fetch wait): three seconds of the queue
    # paused, and none of the three has run.
    time.sleep(3)
    assert all(state_of(visit.sender, p.id) == "pending" for p in held)
    visit.shoot("paused")
    resume = '#queues tr.paused button[type="submit"]'
    until(browser, lambda b: css(b, resume).click() or True, "the resume button clicked")
    assert sorted(p.result(timeout=WAIT) for p in held) == [0, 2, 4]


def other_pages_show_workers_schedules_and_limits(visit: Visit) -> None:
    browser = visit.browser
    visit.open("/workers")
    until(browser, lambda b: all_css(b, "#workers tbody tr"), "a live worker")
    visit.shoot("workers")
    visit.open("/periodic")
    until(browser, lambda b: "e2e.minutely" in css(b, "#schedules").text, "the schedule")
    until(browser, lambda b: "a worker leads" in css(b, "main").text, "a leader", 20)
    visit.shoot("periodic")
    visit.open("/limits")
    until(browser, lambda b: "20/s" in css(b, "#limits").text, "the limits")
    visit.shoot("limits")


def test_the_dashboard_in_a_browser_follows_real_workers(
    browser: Any,
    served: Served,
    workers: Workers,
    shared_url: str,
    tmp_path: Path,
    screenshots: Path | None,
) -> None:
    sender = build(shared_url, events=True)
    marker = tmp_path / "fixed"
    visit = Visit(browser, served, sender, screenshots)
    try:
        workers.start("-q", "work", "-c", "8", log=tmp_path / "worker.log")
        ids = send_every_kind(sender, marker)
        overview_refreshes_with_its_charts(visit)
        filtered_list_leads_to_an_escaped_detail(visit, ids["boom"])
        requeued_dead_letter_succeeds(visit, ids["fixed"], marker)
        paused_queue_runs_nothing_until_resumed(visit)
        other_pages_show_workers_schedules_and_limits(visit)
    finally:
        sender.close_sync()
