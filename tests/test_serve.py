"""`musiclm serve` in a real browser: Debian's Chromium, headless, driven by Selenium, against a server this
test starts on a free loopback port. The browser may resolve no other host, and every request it made is
checked to have stayed on 127.0.0.1: the page must work with no internet."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

CHROMIUM = Path("/usr/bin/chromium")
SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "musiclm_small"
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "musiclm.cli.main", "serve", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"musiclm serve did not start; its output:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = f"missing {', '.join(missing)}: run scripts/setup.sh (Debian's chromium, chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # with the driver's path too: Selenium Manager downloads nothing
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_page_makes_music_and_shows_bad_requests(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def page_text() -> str:
        return browser.find_element(By.TAG_NAME, "body").text

    browser.get(page_url)
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    generate = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#generate"))

    generate.click()  # no prompt: the pipeline's error, as a message in the page
    wait.until(lambda d: "are empty; describe the music" in page_text())
    assert "Traceback" not in page_text()

    # The same server still serves: 2 s of music with seed 1
    prompt = browser.find_element(By.CSS_SELECTOR, "#prompt textarea")
    prompt.send_keys("a slow chorale for church organ in F major")
    for field, value in (("#duration", "2"), ("#seed", "1")):
        box = browser.find_element(By.CSS_SELECTOR, f"{field} input[type=number]")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(value, Keys.TAB)
    assert browser.find_element(By.CSS_SELECTOR, "#duration input[type=range]").get_attribute("value") == "2"
    # the guidance slider starts at the shipped model's own scale (its pipeline.json)
    browser.find_element(By.CSS_SELECTOR, "#advanced button").click()
    shipped_guidance = json.loads((SHIPPED / "pipeline.json").read_text())["guidance"]
    guidance = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#guidance input[type=range]"))
    guidance = guidance.get_attribute("value")
    assert float(guidance) == shipped_guidance
    generate.click()
    stages_seen = set()

    def audio_link(driver):
        stages_seen.update(s for s in ("semantic", "coarse", "fine") if f"{s} stage" in page_text())
        links = driver.find_elements(By.CSS_SELECTOR, "#result-0 a[data-testid=download-link]")
        return links[0].get_attribute("href") if links else None

    link = wait.until(audio_link)
    assert stages_seen, "no per-stage progress was shown while generating"
    assert browser.find_element(By.CSS_SELECTOR, "#info").text.startswith("Seed 1 ·")
    assert browser.find_element(By.CSS_SELECTOR, "#spectrogram-0 img").get_attribute("src")
    screenshot = tmp_path / "page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000

    with urllib.request.urlopen(link, timeout=10) as response:
        wav, rate = sf.read(io.BytesIO(response.read()), dtype="float32")
    assert abs(len(wav) / rate - 2.0) < 0.05
    assert np.sqrt(np.mean(wav**2)) > 1e-3, "the generated audio is silent"

    requested = {
        json.loads(entry["message"])["message"]["params"].get("request", {}).get("url", "")
        for entry in browser.get_log("performance")
    }
    outside = [u for u in requested if u and not u.startswith(("http://127.0.0.1:", "data:", "blob:"))]
    assert not outside, f"the page fetched from outside the machine: {outside[:5]}"


@pytest.mark.parametrize(
    "request_, message",
    [
        (dict(melody="silent"), "the melody file is silent"),
        (dict(melody="unreadable"), "cannot read audio file"),
        (dict(continuation="unreadable"), "cannot read audio file"),
        (dict(prompt="", story="calm piano: 1\nfiddle tune"), "a story segment is 'TEXT:SECONDS'"),
        (dict(prompt="", story="calm piano: 200\nfiddle tune: 200"), "above this model's maximum"),
    ],
)
def test_bad_requests_get_the_library_message(page_url, tmp_path, request_, message):
    """Uploads and story lines, through the page's own endpoint (what the page's form sends)."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    files = {"silent": tmp_path / "silent.wav", "unreadable": tmp_path / "unreadable.wav"}
    sf.write(files["silent"], np.zeros(5 * 16000, dtype=np.float32), 16000)
    files["unreadable"].write_text("not audio")
    request_ = {"prompt": "calm piano", "story": "", **request_}
    uploads = {
        k: handle_file(str(files[request_[k]])) if k in request_ else None for k in ("melody", "continuation")
    }
    with pytest.raises(AppError, match=message.replace("'", ".")):
        Client(page_url, verbose=False).predict(
            request_["prompt"],
            1,
            0,
            1,
            uploads["melody"],
            uploads["continuation"],
            request_["story"],
            1.0,
            1.0,
            0.95,
            0.4,
            api_name="/generate",
        )


def test_the_pages_blend_sliders_are_shares_of_the_mix():
    from musiclm.web import page_blend

    assert page_blend("calm piano", "", 0.5, None, 0.5) == ("calm piano", [], [])
    assert page_blend("", "a jig", 0.2, None, 0.5) == ("a jig", [], [])
    assert page_blend("calm piano", "a jig", 0.25, None, 0.5) == (
        None,
        [("calm piano", 0.75), ("a jig", 0.25)],
        [],
    )
    # with a clip, the clip's slider is its share of the whole and the texts share the rest
    texts, blend, style = page_blend("calm piano", "a jig", 0.25, "song.wav", 0.2)
    assert texts is None and style == [("song.wav", 0.2)]
    assert blend == [("calm piano", pytest.approx(0.6)), ("a jig", pytest.approx(0.2))]
    assert page_blend("calm piano", " ", 0.5, "song.wav", 1.0) == (
        None,
        [("calm piano", 0.0)],
        [("song.wav", 1.0)],
    )
    assert page_blend("", "", 0.5, "song.wav", 0.3) == (None, [], [("song.wav", 1.0)])  # the clip alone
