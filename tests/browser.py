"""Headless Debian Chromium through its chromedriver, for the browser tests (nothing downloaded).

:func:`chromium` yields a Selenium driver at 1280 x 1000 that keeps the
page's console log. Without Debian's ``chromium`` and ``chromium-driver`` a
test skips with the command that installs them; under CI (``CI=true``) it
fails instead, since CI installs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
IN_CI = os.environ.get("CI") == "true"


def chromium(profile_dir):
    """Yield a headless Chromium driver whose profile lives in ``profile_dir``; quit after."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = (f"the browser test needs Debian's chromium and chromium-driver "
                   f"(apt-get install -y chromium chromium-driver); missing {missing}")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"the browser test needs selenium (pip install -e '.[test]'): {exc}")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # As root Chromium needs --no-sandbox; the networking flags stop it from calling
    # home (the machine has no network, and each refused call slows the start).
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000",
                 f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
