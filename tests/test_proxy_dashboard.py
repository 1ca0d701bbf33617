"""The monitoring dashboard in a real headless Chromium against a gateway on a real socket.

The store is seeded with hand-chosen predictions, feedback, drift checks and two model versions;
the expected figures below are worked out by hand from those seeds. Hostile values (a path with
``<script>``, a user id and notes with ``<img onerror>``, an explanation quoting a user agent with
markup) must render as literal text and never become markup or run.

Set ``BG_DASHBOARD_SCREENSHOT=docs/dashboard.png`` to refresh the screenshot kept in docs/.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from config.model import ModelSettings
from proxy.api.dashboard import CSP, page_html
from proxy.app import MODELS, STORE, create_app, server_options
from scoring.features import FEATURE_NAMES, FEATURE_SET_VERSION
from scoring.training import train_bundle
from storage.records import PredictionRecord
from tests.proxyharness import RecordingUpstream, gateway_settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
P = "/api/ml-anomaly"
ADMIN_TOKEN = "dashboard-admin-token-0123456789"  # noqa: S105 - a test token
STATIC = Path(__file__).resolve().parent.parent / "proxy" / "static"

XSS_ROUTE = "/api/<script>window.__xss=2</script>/x?<img src=x onerror=window.__xss=3>"
XSS_USER = '<img src=x onerror="window.__xss=1">'
XSS_NOTES = '<img src=x onerror="window.__xss=4"> it was me'
XSS_SENTENCE = "New device: UA <script>window.__xss=5</script><img src=x onerror=window.__xss=6>"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def bundle_bytes() -> bytes:
    """A small but real model bundle (two versions are saved from it)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, len(FEATURE_NAMES))).astype(np.float32)
    s = ModelSettings.model_validate(
        {
            "autoencoder": {"epochs": 2, "batch_size": 128, "encoding_dim": 4},
            "isolation_forest": {"n_trees": 10},
            "training": {"min_samples": 100},
        }
    )
    return train_bundle(X, list(FEATURE_NAMES), FEATURE_SET_VERSION, s).to_bytes()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; never downloads a browser or driver."""
    profile = tempfile.TemporaryDirectory(prefix="bg-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,800",
        f"--user-data-dir={profile.name}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


@pytest.fixture
async def gateway(aiohttp_server, tmp_path):
    upstream = RecordingUpstream()
    up = await aiohttp_server(upstream.app())
    overrides = {
        "api": {"admin_token_hashes": [hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()]},
        "lifecycle": {
            "auto_train": False,
            "daily_retrain": False,
            "scheduler_tick_s": 3600,
            "learning_check_interval_s": 3600,
        },
    }
    settings = gateway_settings(up.port, str(tmp_path), **overrides)
    opts = server_options(settings)
    opts.pop("handler_cancellation")
    server = await aiohttp_server(create_app(settings), **opts)
    server.upstream = upstream  # type: ignore[attr-defined]
    return server


def record(user: str | None, decision: str, composite: float, minutes_ago: float, **kw):
    return PredictionRecord(
        ts=datetime.now(UTC) - timedelta(minutes=minutes_ago),
        session_id=f"s-{user}",
        user_id=user,
        method=kw.pop("method", "GET"),
        route=kw.pop("route", "/api/items"),
        rule="default",
        client_ip="10.0.0.9",
        features=np.zeros(len(FEATURE_NAMES), np.float32),
        composite=composite,
        iforest_score=composite,
        autoencoder_score=composite,
        decision=decision,
        is_anomaly=decision in ("MONITOR", "CHALLENGE", "REQUIRE_2FA", "BLOCK"),
        confidence=0.8,
        agreement=0.9,
        processing_ms=2.5,
        feature_set_version=FEATURE_SET_VERSION,
        **kw,
    )


async def seed(app, bundle: bytes) -> dict[str, str]:
    """Seed the store; returns ids the browser scenario needs."""
    store = app[STORE]
    challenge = record(
        "alice",
        "CHALLENGE",
        0.74,
        20,
        route=XSS_ROUTE,
        explanation={
            "topFeatures": [
                {
                    "feature": FEATURE_NAMES[0],
                    "contribution": 0.21,
                    "value": 42.0,
                    "normalizedValue": "high",
                },
                {
                    "feature": FEATURE_NAMES[5],
                    "contribution": 0.08,
                    "value": -0.5,
                    "normalizedValue": "unusual hour",
                },
            ],
            "explanation": XSS_SENTENCE,
            "modelAgreement": 0.95,
            "confidence": 0.85,
        },
    )
    recs = [
        # last hour: 8 scored, 3 anomalous (MONITOR, CHALLENGE, BLOCK) -> 37.5 %
        record("alice", "ALLOW", 0.10, 5),
        record("alice", "ALLOW", 0.20, 10),
        challenge,
        record("alice", "BLOCK", 0.93, 30),
        record("bob", "ALLOW", 0.15, 35),
        record("bob", "ALLOW", 0.25, 40),
        record("bob", "ALLOW", 0.30, 45),
        record("bob", "MONITOR", 0.67, 50),
        # 3 hours ago: the day has 10 scored, 3 anomalous -> 30.0 %
        record("bob", "ALLOW", 0.10, 180),
        record("bob", "ALLOW", 0.12, 185),
        # 2 days ago: the week has 12 scored, 5 anomalous -> 41.7 %
        record(XSS_USER, "BLOCK", 0.95, 2 * 24 * 60),
        record(XSS_USER, "BLOCK", 0.96, 2 * 24 * 60 + 5),
    ]
    await store.insert_predictions(recs)
    await store.add_feedback(challenge.id, "alice", is_false_positive=True, notes=XSS_NOTES)

    registry = store.registry
    for _ in range(2):
        await registry.save_version(
            bundle,
            feature_set_version=FEATURE_SET_VERSION,
            metrics={"auc": 0.91},
            sample_count=600,
        )
    await registry.activate(1, by="test")
    await app[MODELS].refresh()
    now = datetime.now(UTC)
    # keep the scheduler's own drift check out of the seeded history
    await store.record_job_run(
        "drift", now + timedelta(days=30), ran_at=now, status="ok", details={}
    )
    for hours_ago, score in ((2, 0.05), (1, 0.08), (0, 0.12)):
        report = {
            "sampleSize": 500,
            "driftScore": score,
            "isDrifting": False,
            "trend": "increasing",
            "features": [
                {"feature": FEATURE_NAMES[7], "psi": 0.04, "ks": 0.05, "drifting": False},
                {"feature": FEATURE_NAMES[0], "psi": 0.31, "ks": 0.2, "drifting": True},
            ],
            "checkedAt": (now - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z"),
            "modelVersion": 1,
        }
        await store.insert_drift_check(now - timedelta(hours=hours_ago), 1, report, keep=50)
    return {"challenge": challenge.id}


# ------------------------------------------------------------------ browser helpers


def wait_for(driver: WebDriver, check, what: str, timeout: float = 15.0):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: check(d))
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}") from None


def text_of(driver: WebDriver, css: str) -> str:
    """The rendered text of the first match, read in one step (a redraw cannot make it stale)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : '';", css
    )


def texts_of(driver: WebDriver, css: str) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText.trim());", css
    )


def wait_text(driver: WebDriver, css: str, expected: str, timeout: float = 15.0) -> str:
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.05).until(
            lambda d: expected in text_of(d, css)
        )
    except TimeoutException:
        seen = text_of(driver, css)
        raise AssertionError(
            f"timed out waiting for {expected!r} in {css}; it shows {seen!r}"
        ) from None
    return text_of(driver, css)


def sign_in(driver: WebDriver, base: str, token: str) -> None:
    driver.get(base + P + "/dashboard?refresh=60")
    wait_for(driver, lambda d: d.find_element(By.ID, "token").is_displayed(), "the token form")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()


def no_markup_from_data(driver: WebDriver) -> None:
    """No seeded markup became elements, and none of it ran."""
    assert driver.execute_script("return typeof window.__xss") == "undefined"
    assert (
        driver.execute_script("return document.querySelectorAll('img, script:not([src])').length")
        == 0
    )


def severe_logs(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


# ------------------------------------------------------------------ tests


async def test_page_and_assets_carry_a_strict_csp_and_need_no_auth(gateway):
    base = f"http://127.0.0.1:{gateway.port}{P}"
    async with aiohttp.ClientSession() as s:
        for path, ctype in (
            ("/dashboard", "text/html"),
            ("/dashboard/dashboard.js", "text/javascript"),
            ("/dashboard/dashboard.css", "text/css"),
        ):
            async with s.get(base + path) as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith(ctype)
                assert r.headers["Content-Security-Policy"] == CSP
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                body = await r.text()
        async with s.get(base + "/dashboard") as r:
            page = await r.text()
        for bad in ("/dashboard/..%2Fapp.py", "/dashboard/dashboard.html", "/dashboard/x.js"):
            async with s.get(base + bad) as r:
                assert r.status == 404 and (await r.json())["success"] is False
        async with s.get(base + "/performance") as r:  # the data itself needs the admin token
            assert r.status == 401
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "default-src 'none'" in CSP
    # the prefix is filled in; no inline script or style, no third-party origin
    assert f'<meta name="bg-api" content="{P}">' in page
    assert f'src="{P}/dashboard/dashboard.js"' in page and "{{" not in page
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None
    assert "<style" not in page and " style=" not in page
    assert re.search(r"\son[a-z]+\s*=", page) is None  # no inline event handler
    assert "http://" not in page and "https://" not in page
    assert body  # the last asset read was not empty


async def test_page_follows_a_configured_prefix(aiohttp_server, tmp_path):
    up = await aiohttp_server(RecordingUpstream().app())
    settings = gateway_settings(up.port, str(tmp_path), api={"prefix": "/ops/bg"})
    opts = server_options(settings)
    opts.pop("handler_cancellation")
    server = await aiohttp_server(create_app(settings), **opts)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{server.port}/ops/bg/dashboard") as r:
            page = await r.text()
        async with s.get(f"http://127.0.0.1:{server.port}/ops/bg/dashboard/dashboard.css") as r:
            assert r.status == 200
    assert '<meta name="bg-api" content="/ops/bg">' in page
    assert 'href="/ops/bg/dashboard/dashboard.css"' in page


def test_prefix_is_escaped_into_the_page():
    page = page_html('/a"><script>x</script>').decode()
    assert '<meta name="bg-api" content="/a&quot;&gt;&lt;script&gt;x&lt;/script&gt;">' in page
    assert "<script>x" not in page


def test_script_never_parses_markup_from_strings():
    js = (STATIC / "dashboard.js").read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "localStorage",
        "DOMParser",
        "createContextualFragment",
    ):
        assert sink not in js, sink
    assert "sessionStorage" in js


def check_anomaly_rate(d: WebDriver) -> None:
    """Figures worked out from the seeds by hand."""
    assert "37.5%" in wait_text(d, '.tile[data-hours="1"]', "3 of 8 scored")
    assert "30.0%" in wait_text(d, '.tile[data-hours="24"]', "3 of 10 scored")
    assert "41.7%" in wait_text(d, '.tile[data-hours="168"]', "5 of 12 scored")
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#rate-mix rect.bar"), "mix bars")
    # one stacked segment per (bucket, decision); the seeded day holds these four decisions
    bars = d.find_elements(By.CSS_SELECTOR, "#rate-mix rect.bar")
    kinds = {b.get_attribute("class").split()[-1] for b in bars}
    assert kinds == {"d-ALLOW", "d-MONITOR", "d-CHALLENGE", "d-BLOCK"}


def check_model_health(d: WebDriver) -> None:
    wait_text(d, "#mode", "enforce")
    drift = wait_text(d, "#model-drift", "12.0% (threshold 15%)")
    assert "stable, trend increasing" in drift
    assert text_of(d, "#model-drift tbody tr").split()[:2] == [FEATURE_NAMES[0], "0.31"]
    assert len(d.find_elements(By.CSS_SELECTOR, "#model-drift circle.dot")) == 3
    versions = wait_text(d, "#model-versions", "v1 (active)")
    assert "auc\n0.91" in versions and "active · by test" in versions


def check_quality(d: WebDriver) -> None:
    q = wait_text(d, "#quality", "33.3% (1 reported of 3 anomalies, last day)")
    assert "1 on anomalies" in q and "no step-up issued yet" in q
    for p in ("p50", "p95", "p99"):
        assert text_of(d, f'#quality tr[data-p="{p}"]').split() == [p, "2.5", "ms"]
    reports = text_of(d, "#fp-list")
    assert XSS_NOTES in reports and XSS_ROUTE in reports


def search_user(d: WebDriver, user: str) -> None:
    box = d.find_element(By.ID, "user-id")
    box.clear()
    box.send_keys(user)
    d.find_element(By.CSS_SELECTOR, "#user-form button").click()


def chips(d: WebDriver, css: str) -> list[str]:
    return texts_of(d, css + " .chip")


def check_profile_and_explanation(d: WebDriver, challenge_id: str) -> None:
    search_user(d, "alice")
    wait_text(d, "#user-result", "4 in the last week, 2 alerts")
    assert chips(d, "#predictions tbody tr") == ["ALLOW", "ALLOW", "CHALLENGE", "BLOCK"]
    assert len(d.find_elements(By.CSS_SELECTOR, "#user-result circle.dot")) == 4
    assert chips(d, "#alerts li") == ["CHALLENGE", "BLOCK"]

    d.find_element(By.CSS_SELECTOR, f'#predictions tr[data-id="{challenge_id}"]').click()
    rows = "#top-features tbody tr"
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, rows), "top features")
    assert text_of(d, "#sentence") == XSS_SENTENCE
    feats = [t.split() for t in texts_of(d, rows)]
    assert feats == [
        [FEATURE_NAMES[0], "0.21", "42", "high"],
        [FEATURE_NAMES[5], "0.08", "-0.5", "unusual", "hour"],
    ]
    detail = text_of(d, "#explanation")
    assert "Model agreement\n0.95" in detail and "Confidence\n0.85" in detail
    assert XSS_ROUTE in detail
    assert XSS_NOTES in wait_text(d, "#feedback", "Reported as a false positive by alice")


def check_hostile_user(d: WebDriver) -> None:
    search_user(d, XSS_USER)
    wait_text(d, "#user-result", "2 in the last week, 2 alerts")
    assert text_of(d, "#profile-user") == XSS_USER
    no_markup_from_data(d)


def check_activation(d: WebDriver) -> None:
    """Two clicks (ask, then confirm) switch the gateway to v2; v1 becomes a roll back."""
    button = d.find_element(By.CSS_SELECTOR, 'button[data-action="activate"][data-version="2"]')
    assert button.text == "Activate to v2"
    button.click()
    assert button.text == "Confirm: activate to v2?"
    button.click()
    wait_text(d, "#activate-msg", "v2 is now active.")
    wait_text(d, "#model-versions", "v2 (active)")
    back = 'button[data-action="activate"][data-version="1"]'
    assert text_of(d, back) == "Roll back to v1"


def check_phone_width(d: WebDriver) -> None:
    d.set_window_size(390, 844)
    try:
        overflow = d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1
    finally:
        d.set_window_size(1280, 800)


def save_screenshot(d: WebDriver, path: str) -> None:
    """The whole page at 1280 px wide (for docs/dashboard.png)."""
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(1280, height + 100)
    d.execute_script("window.scrollTo(0, 0)")
    d.save_screenshot(path)
    d.set_window_size(1280, 800)
    # the page redraws its charts once a resize settles (400 ms): let that refresh finish
    t = d.execute_script("return Date.now()")
    wait_for(
        d,
        lambda d: (
            int(d.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed") or 0) > t + 400
        ),
        "the refresh after a resize",
    )


async def test_dashboard_in_a_real_browser(gateway, browser, bundle_bytes):
    ids = await seed(gateway.app, bundle_bytes)
    base = f"http://127.0.0.1:{gateway.port}"
    shot = os.environ.get("BG_DASHBOARD_SCREENSHOT")

    def scenario() -> None:
        d = browser
        d.set_window_size(1280, 800)
        d.get_log("browser")  # drop earlier entries
        sign_in(d, base, ADMIN_TOKEN)
        token = d.execute_script("return sessionStorage.getItem('behaviorgate.adminToken')")
        assert token == ADMIN_TOKEN
        assert d.execute_script("return localStorage.length") == 0
        check_anomaly_rate(d)
        check_model_health(d)
        check_quality(d)
        check_profile_and_explanation(d, ids["challenge"])
        if shot:
            save_screenshot(d, shot)
        check_hostile_user(d)
        assert severe_logs(d) == []  # no CSP violation, no failed request
        check_activation(d)
        check_phone_width(d)

    await asyncio.to_thread(scenario)
    assert gateway.app[MODELS].version == 2
    active = await gateway.app[STORE].registry.active_version()
    assert active is not None and active.version == 2 and active.activated_by.startswith("token:")
    assert gateway.upstream.seen == []  # the dashboard never reaches the upstream


async def test_empty_store_says_what_to_do_and_bad_token_is_refused(gateway, browser):
    base = f"http://127.0.0.1:{gateway.port}"

    def scenario() -> None:
        d = browser
        sign_in(d, base, "not-the-token")
        wait_text(d, "#login-error", "The token was not accepted.")
        assert d.execute_script("return sessionStorage.length") == 0
        assert not d.find_element(By.ID, "main").is_displayed()

        d.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
        d.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait_text(d, "#mode", "learning: 0 of 1000 samples")
        assert "0 of 0 scored" in wait_text(d, '.tile[data-hours="1"]', "0 of 0 scored")
        wait_text(d, "#rate-trend", "No scored requests in the last day.")
        wait_text(
            d, "#model-state", "the first model trains automatically once it has 1000 samples"
        )
        wait_text(d, "#model-versions", "No model version yet")
        wait_text(d, "#model-drift", "No drift check yet")
        d.find_element(By.CSS_SELECTOR, "#model-state .actions button").click()
        wait_text(d, "#retrain-msg", "insufficient training data: 0 of 1000 samples")
        wait_text(d, "#quality", "No false-positive reports.")
        wait_text(d, "#user-result", "Search a user id")
        d.find_element(By.ID, "user-id").send_keys("nobody")
        d.find_element(By.CSS_SELECTOR, "#user-form button").click()
        wait_text(d, "#user-result", "No predictions for “nobody” in the last week.")

        # range switch re-draws the trend for the hour
        d.find_element(By.CSS_SELECTOR, '#range button[data-hours="1"]').click()
        wait_text(d, "#rate-trend", "No scored requests in the last hour.")

        d.find_element(By.ID, "signout").click()
        wait_text(d, "#login-error", "Signed out.")
        assert d.execute_script("return sessionStorage.length") == 0

    await asyncio.to_thread(scenario)
