"""Driving the demo page in headless Chromium (Selenium and Debian's chromium-driver): what its browser
test does, and how docs/demo.png is taken. `selenium` is a dev dependency, imported here only."""

from __future__ import annotations

import shutil
import tempfile

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")


def chromium_missing() -> str | None:
    """Why headless Chromium cannot run here, or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install chromium chromium-driver)"
    return None


class Page:
    """The demo page at `url` in a fresh headless Chromium profile; use as a context manager."""

    def __init__(self, url: str, width: int = 1200, height: int = 900, timeout: float = 20):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="updown_demo_chromium_")
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        self.timeout = timeout
        self.driver.get(url)
        self._wait(lambda d: "checkpoint " in d.find_element("id", "checkpoint").text)

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _wait(self, condition):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, self.timeout).until(condition)

    def choose(self, image_id: int | None = None, upload: str | None = None) -> None:
        """Click one of the data's images, or upload a file (its absolute path)."""
        if upload is not None:
            self.driver.find_element("id", "upload").send_keys(upload)
        else:
            self._wait(lambda d: d.find_elements("css selector", f'.thumb[data-image-id="{image_id}"]'))[0].click()

    def ask(self, question: str = "") -> dict:
        """Type the question, press Ask and wait for the answers (or the error); what the page shows."""
        find = self.driver.find_element
        self._wait(lambda d: find("id", "preview").get_attribute("src") or find("id", "error").is_displayed())
        self.driver.execute_script("document.getElementById('answers').replaceChildren();"
                                   "document.getElementById('caption').textContent = '';")
        box = find("id", "question")
        if box.is_displayed():
            box.clear()
            box.send_keys(question)
        find("id", "ask").click()
        self._wait(lambda d: (find("id", "error").is_displayed() or find("id", "caption").text
                              or d.find_elements("css selector", "#answers li")))
        answers = [(li.find_element("class name", "answer-text").text, float(li.find_element("class name", "score").text))
                   for li in self.driver.find_elements("css selector", "#answers li")]
        tokens = [(t.text, "unknown" in t.get_attribute("class")) for t in self.driver.find_elements("css selector", "#tokens .token")]
        attention = self.driver.execute_script(
            "const img = document.getElementById('attention'); return img.complete ? img.naturalWidth : 0;")
        return {"error": find("id", "error").text if find("id", "error").is_displayed() else "",
                "answers": answers, "tokens": tokens, "attention_width": attention,
                "caption": find("id", "caption").text,
                "word_pictures": len(self.driver.find_elements("css selector", "#words img.word-attention"))}

    def screenshot(self, out: str) -> None:
        """A PNG of the whole page as it is now."""
        import time

        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(self.driver.get_window_size()["width"], max(600, height + 200))
        time.sleep(0.5)  # let the resized page lay out before the capture
        self.driver.save_screenshot(out)
