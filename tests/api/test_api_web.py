"""The web page at `/` in a real headless browser (Debian's Chromium driven by Selenium).

scripts/test.sh installs `chromium` and `chromium-driver` with apt-get when it can; where they are
missing the browser test is skipped with the reason. The screenshot is kept as a test artifact in
MAIE_TEST_ARTIFACTS (default: tests/artifacts/, git-ignored). MAIE_WEB_SUMMARY=1 also asks for a
summary (the bundled LLM: slower), which is how docs/api.md's screenshot was made.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_support import JFK, ApiServer, normalise

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(os.environ.get("MAIE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[object]:
    if not CHROMIUM or not DRIVER:
        pytest.skip(
            "Debian's chromium and chromium-driver are missing (scripts/test.sh installs them as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1400",
                "--disable-gpu", "--no-first-run"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_page_is_served_with_a_strict_policy(server: ApiServer) -> None:
    page = httpx.get(f"{server.base_url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css", "favicon.svg"):
        assert httpx.get(f"{server.base_url}/web/{asset}").status_code == 200
    assert httpx.get(f"{server.base_url}/web/..%2Fapp.py").status_code == 404


def test_upload_jfk_through_the_page_and_read_the_transcript(browser: object, server: ApiServer) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver: WebDriver = browser  # type: ignore[assignment]
    driver.get(f"{server.base_url}/")
    driver.find_element(By.ID, "api-key").send_keys(server.api_key)
    driver.find_element(By.ID, "save-key").click()
    assert driver.execute_script("return sessionStorage.getItem('maie.apiKey')") == server.api_key
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#template option[value]")) >= 3)

    with_summary = os.environ.get("MAIE_WEB_SUMMARY") == "1"
    if with_summary:
        driver.find_element(By.CSS_SELECTOR, "input[value=summary]").click()
        Select(driver.find_element(By.ID, "template")).select_by_value("meeting_notes_v1")
    driver.find_element(By.ID, "file-input").send_keys(str(JFK))
    driver.find_element(By.ID, "submit").click()

    # The stages come from the SSE stream; the transcript appears when the `result` event arrives.
    WebDriverWait(driver, 600 if with_summary else 180).until(
        lambda d: d.find_element(By.ID, "stage").text in ("COMPLETE", "FAILED")
    )
    assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
    transcript = driver.find_element(By.ID, "transcript")
    assert "ask not what your country can do for you" in normalise(transcript.text)
    lines = transcript.find_elements(By.TAG_NAME, "li")
    assert lines and lines[0].find_element(By.TAG_NAME, "time").text.startswith("0:00.0 – ")
    done = driver.find_elements(By.CSS_SELECTOR, "#stages li.done")
    assert [li.get_attribute("data-stage") for li in done][:2] == ["PENDING", "PREPROCESSING"]
    buttons = driver.find_elements(By.CSS_SELECTOR, "#downloads button")
    exports = {b.get_attribute("data-export") for b in buttons}
    assert {"result.json", "transcript.txt", "transcript.srt", "transcript.vtt"} <= exports
    if with_summary:
        assert driver.find_element(By.ID, "summary").text.strip()
    # The download buttons fetch from GET /v1/tasks/{id}/files/{name} with the saved key.
    srt = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const id = document.getElementById('task-id').textContent;"
        "api(FILES_ROUTE.replace('{id}', id).replace('{name}', 'transcript.srt'))"
        ".then((r) => r.text()).then(done, (e) => done(String(e)));"
    )
    assert "00:00:00,000 --> " in srt and "country" in srt, srt

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "web-page.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1200, min(int(height) + 140, 4000))  # the whole page in one picture
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
