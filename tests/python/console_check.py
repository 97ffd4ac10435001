"""Drives the console page (GET / as a browser asks for it) in a real
browser: Debian's chromium through its chromedriver, headless.

It starts watching the page's default filter (responses), clicks "Send a
ping", waits for the answer and for that answer to appear in the live panel,
then prints one JSON object on stdout: the answer's status, trace id and
body as the page shows them, the live rows, and the browser's console
errors (a Content-Security-Policy violation would show there).

Usage: console_check.py BASE_URL
"""

import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_SECONDS = 30


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: the tests may run as root, where chromium's sandbox
    # refuses to start.
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def main(base_url):
    driver = browser()
    try:
        driver.get(base_url)
        wait = WebDriverWait(driver, WAIT_SECONDS)
        title = driver.title

        driver.find_element(By.ID, "watch").click()
        wait.until(lambda d: d.find_element(By.ID, "live-status").text == "watching")

        driver.find_element(By.ID, "ping").click()
        meta = driver.find_element(By.ID, "answer-meta")
        wait.until(lambda d: meta.get_attribute("data-status"))
        answer = json.loads(driver.find_element(By.ID, "answer").text)

        row = f"#live li[data-id='{answer.get('id')}']"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        live = [
            {
                "offset": li.get_attribute("data-offset"),
                "type": li.get_attribute("data-type"),
                "id": li.get_attribute("data-id"),
            }
            for li in driver.find_elements(By.CSS_SELECTOR, "#live li")
        ]
        errors = [
            entry["message"]
            for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE"
        ]
        print(json.dumps({
            "title": title,
            "status": int(meta.get_attribute("data-status")),
            "trace_id": meta.get_attribute("data-trace-id"),
            "meta": meta.text,
            "answer": answer,
            "live": live,
            "console_errors": errors,
        }))
    finally:
        driver.quit()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
