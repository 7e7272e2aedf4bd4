"""Issue 12 item 5: the dashboard in a real browser (Debian's chromium, headless, via chromedriver).

The bot runs in-process with its API (tests/api_rig.py); selenium drives chromium in a worker
thread so the bot's loop keeps serving. The page must show the pairs with state and z, the
positions, PnL and an equity sparkline, follow the bot live over /ws, load nothing from outside
(the server's CSP would refuse it, and the console would say so) and log no error.
Under ``make test`` (``PAIRS_BOT_REQUIRE_BROWSER=1``) a missing browser fails; plain pytest skips.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import pytest

from core.types import PairState
from tests.api_rig import IN_POSITION, TOKEN, ApiRig

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REQUIRE = os.environ.get("PAIRS_BOT_REQUIRE_BROWSER") == "1"
TEST_TIMEOUT_S = 90
STATES = {"FLAT", "LONG_SPREAD", "SHORT_SPREAD", "ENTERING", "EXITING", "RESOLVING", "HALTED", "BLOCKED"}
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000")


def _need_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = f"{', '.join(missing)} missing: `make browser` installs chromium and chromium-driver"
        if REQUIRE:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")  # fresh every test
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


async def _until(check: Callable[[], Any], *, timeout_s: float = 20.0, what: str = "") -> Any:
    """Poll ``check`` in a worker thread (selenium blocks) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout_s} s: {what}")
        await asyncio.sleep(0.1)


def _js(driver: Any, script: str) -> Any:
    return lambda: driver.execute_script(script)


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


PAGE_STATE = """
const rows = [...document.querySelectorAll('#pairs-body tr')].map(tr => ({
  pair: tr.dataset.pair, state: tr.children[1].textContent, z: tr.children[2].textContent}));
return {rows, positions: [...document.querySelectorAll('#positions-body tr')].map(tr => tr.dataset.pair),
        points: Number(document.getElementById('equity-sparkline').dataset.points || 0),
        line: document.getElementById('equity-line').getAttribute('points'),
        equity: document.getElementById('equity').textContent,
        realized: document.getElementById('realized').textContent,
        ws: document.body.dataset.wsState, paused: document.getElementById('paused').textContent,
        events: [...document.querySelectorAll('#events li')].map(li => li.textContent),
        count: Number(document.getElementById('event-count').textContent),
        boardShown: getComputedStyle(document.getElementById('board')).display !== 'none',
        formShown: getComputedStyle(document.getElementById('token-form')).display !== 'none',
        address: location.href};
"""


async def test_dashboard_shows_pairs_positions_equity_and_follows_the_bot_live(api_rig, browser: Any,
                                                                              tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig: ApiRig = await api_rig()
        await rig.wait_state("EOS_AXS", IN_POSITION)
        await asyncio.to_thread(browser.get, f"{rig.base_url}/#token={TOKEN}")
        page = await _until(lambda: (s := browser.execute_script(PAGE_STATE))["ws"] == "open" and
                            len(s["rows"]) == 3 and s["points"] >= 2 and s, what="pairs, sparkline and /ws open")
        assert page["boardShown"] and not page["formShown"]  # what is on the screen, not only the attribute
        assert "token" not in page["address"]  # the fragment left the address bar
        rows = {r["pair"]: r for r in page["rows"]}
        assert sorted(rows) == ["BTC_ETH", "DOT_ETH", "EOS_AXS"]
        assert all(r["state"] in STATES for r in rows.values())
        assert rows["EOS_AXS"]["state"] in ("LONG_SPREAD", "SHORT_SPREAD")
        assert abs(float(rows["EOS_AXS"]["z"])) < 7.7  # a z value, as a number
        assert "EOS_AXS" in page["positions"]
        assert len(page["line"].split()) == page["points"] >= 2 and page["equity"] != "-"
        assert page["realized"] != "-"

        # live: z moves with metric events, and an operator action shows up without a reload
        first_count = page["count"]
        await _until(lambda: browser.execute_script(PAGE_STATE)["count"] > first_count, what="metric events")
        async with aiohttp.ClientSession(rig.base_url, headers=rig.headers()) as http:
            async with http.post("/pause", json={"reason": "browser test"}) as response:
                assert response.status == 200
            async with http.post("/pairs/EOS_AXS/close") as response:
                assert response.status == 200
        page = await _until(lambda: (s := browser.execute_script(PAGE_STATE)) and
                            any("operator_pause" in e for e in s["events"]) and
                            any("FLATTEN" in e for e in s["events"]) and s["paused"] == "entries paused" and
                            "EOS_AXS" not in s["positions"] and s, what="the pause and the close, live over /ws")
        assert any("position EOS_AXS FLAT" in e for e in page["events"])
        shot = tmp_path / "dashboard.png"
        assert await asyncio.to_thread(browser.save_screenshot, str(shot))
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        errors = await asyncio.to_thread(_console_errors, browser)
        assert errors == [], errors


async def test_dashboard_asks_for_the_token_and_refuses_a_wrong_one(api_rig, browser: Any) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig: ApiRig = await api_rig()
        from selenium.webdriver.common.by import By

        await asyncio.to_thread(browser.get, f"{rig.base_url}/")
        page = await _until(lambda: (s := browser.execute_script(PAGE_STATE))["formShown"] and s, what="the token form")
        assert not page["boardShown"]

        def submit(value: str) -> None:
            field = browser.find_element(By.ID, "token-input")
            field.clear()
            field.send_keys(value)
            browser.find_element(By.ID, "token-submit").click()

        await asyncio.to_thread(submit, "wrong-token-0123456789")
        await _until(_js(browser, "return document.getElementById('token-error').textContent === 'token refused'"),
                     what="the refusal")
        errors = await asyncio.to_thread(_console_errors, browser)
        assert errors and all("401" in e["message"] for e in errors)  # only the refused requests
        await asyncio.to_thread(submit, TOKEN)
        page = await _until(lambda: (s := browser.execute_script(PAGE_STATE))["ws"] == "open" and
                            len(s["rows"]) == 3 and s, what="the board after the right token")
        assert page["boardShown"] and not page["formShown"]
        assert await asyncio.to_thread(_console_errors, browser) == []  # nothing new since the refusal


async def test_dashboard_controls_pause_and_close_through_the_api(api_rig, browser: Any) -> None:
    """The page's buttons are API calls: pause gates entries, a confirmed close flattens both legs
    on the exchange through the engine, resume lifts the pause; each is journaled as the dashboard's."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig: ApiRig = await api_rig()
        from selenium.webdriver.common.by import By

        await rig.wait_state("EOS_AXS", IN_POSITION)
        position = rig.engine.positions["EOS_AXS"]
        await asyncio.to_thread(browser.get, f"{rig.base_url}/#token={TOKEN}")
        await _until(lambda: (s := browser.execute_script(PAGE_STATE))["ws"] == "open" and "EOS_AXS" in s["positions"],
                     what="the board with EOS_AXS in position")
        from selenium.common.exceptions import StaleElementReferenceException

        def click(css: str) -> None:
            """Find and click; the tables re-render on live events, so a found button may be replaced."""
            for _ in range(20):
                try:
                    browser.find_element(By.CSS_SELECTOR, css).click()
                    return
                except StaleElementReferenceException:
                    time.sleep(0.05)
            raise AssertionError(f"{css} kept being replaced")

        await asyncio.to_thread(click, "#pause-toggle")
        await _until(lambda: rig.engine.entry_gate.paused, what="entries paused by the button")
        await _until(_js(browser, "return document.getElementById('pause-toggle').textContent === 'Resume entries'"),
                     what="the button offering resume")

        def close_twice() -> None:
            click('#positions-body button.close[data-pair="EOS_AXS"]')
            click('#positions-body button.close[data-pair="EOS_AXS"].armed')  # the confirmation

        await asyncio.to_thread(close_twice)
        await _until(lambda: rig.engine.pair_state("EOS_AXS") is PairState.FLAT and
                     rig.sim_qty(position.symbol_a) == 0 and rig.sim_qty(position.symbol_b) == 0,
                     what="EOS_AXS flat on the exchange")
        await _until(lambda: "EOS_AXS" not in browser.execute_script(PAGE_STATE)["positions"],
                     what="the position gone from the page")
        await asyncio.to_thread(click, "#pause-toggle")
        await _until(lambda: not rig.engine.entry_gate.paused, what="entries resumed by the button")
        actions = [(e["kind"], e["detail"]["who"]) for e in rig.pipeline.journal.events()
                   if e["kind"].startswith("operator_")]
        assert actions == [("operator_pause", "dashboard"), ("operator_close", "dashboard"),
                           ("operator_resume", "dashboard")]
        assert await asyncio.to_thread(_console_errors, browser) == []
