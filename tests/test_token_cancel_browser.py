"""The token-cancel pages in a real headless Chromium, at a phone's width, against the
served functions: open the emailed link, see the session, press the button, see the
confirmation. Screenshots of every page go to TOKEN_CANCEL_SCREENSHOTS (a directory)
when it is set, else to the test's temporary directory.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package; skips
without them (and CI turns skips into failures). Selenium Manager never runs: the
driver and browser paths are given.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from shared.links import cancellation_url
from tests.functions_fixtures import BookableSpecialist, FunctionsEnv, ServedClient, bearer
from tests.support import Person, create_person

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PHONE = {"width": 390, "height": 844, "pixelRatio": 2.0}

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(f"Chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}: apt-get install chromium chromium-driver)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="token-cancel-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": PHONE})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    chosen = os.environ.get("TOKEN_CANCEL_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def snap(driver: webdriver.Chrome, directory: Path, name: str) -> Path:
    path = directory / f"{name}.png"
    assert driver.save_screenshot(str(path))
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the PNG's IHDR
    assert width == PHONE["width"] * PHONE["pixelRatio"], (width, height)
    return path


def heading(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.TAG_NAME, "h1").text


def shown(driver: webdriver.Chrome) -> dict[str, str]:
    """The page's facts: its <dt> labels and <dd> values, as the reader sees them."""
    labels = [e.text for e in driver.find_elements(By.TAG_NAME, "dt")]
    values = [e.text for e in driver.find_elements(By.TAG_NAME, "dd")]
    return dict(zip(labels, values, strict=True))


@pytest.fixture
def client(committed_db: psycopg.Connection) -> Person:
    return create_person(committed_db, "client", full_name="Alice Client", timezone="Europe/London")


def test_a_client_cancels_from_the_emailed_link_in_a_browser(
        browser: webdriver.Chrome, screenshots: Path, served_functions, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, client: Person, bookable_specialist) -> None:
    specialist: BookableSpecialist = bookable_specialist(full_name="Dr Rosa Lind", calendar_id="rosa@clinic.test")
    starts_at = specialist.slot(days_ahead=5, local_time="10:00")
    booked = ServedClient(served_functions.base_url, "booking-create").post_json(
        {"specialist_id": str(specialist.id), "starts_at": starts_at.isoformat()}, headers=bearer(client))
    assert booked.status == 200, booked.text
    session_id = uuid.UUID(booked.json()["session_id"])

    browser.get(booked.json()["cancel_url"])

    assert heading(browser) == "Cancel this session?"
    local = starts_at.astimezone(specialist.zone)  # the client is in London too
    assert shown(browser) == {"Date": f"{local:%A} {local.day} {local:%B %Y}",
                              "Time": "10:00–10:50 (Europe/London)", "With": "Dr Rosa Lind"}
    button = browser.find_element(By.CSS_SELECTOR, "form button[type=submit]")
    assert button.is_displayed() and button.text == "Yes, cancel this session"
    assert button.size["width"] > 300  # a full-width button on a 390 px screen
    snap(browser, screenshots, "1-confirm")
    assert committed_db.execute("select status from public.sessions").fetchone()["status"] == "confirmed"

    button.click()
    # While the form's answer replaces the page, Chrome may report the old <h1> as gone from the
    # document (a WebDriverException): that is the navigation in progress, so keep waiting.
    WebDriverWait(browser, 15, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Your session is cancelled"))

    assert shown(browser)["With"] == "Dr Rosa Lind"
    snap(browser, screenshots, "2-success")
    session = committed_db.execute("select status, cancelled_by from public.sessions").fetchone()
    assert (session["status"], session["cancelled_by"]) == ("cancelled", client.id)
    assert [call.path.rsplit("/", 1)[1] for call in functions_env.server.api_calls("DELETE")] == [session_id.hex]
    assert functions_env.server.events(specialist.calendar_id) == {}

    browser.get(booked.json()["cancel_url"])  # the link again, later

    assert heading(browser) == "This session was already cancelled"
    assert browser.find_elements(By.TAG_NAME, "form") == []
    snap(browser, screenshots, "4-already-cancelled")


def test_invalid_and_past_links_show_their_own_pages_in_a_browser(
        browser: webdriver.Chrome, screenshots: Path, served_functions, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, client: Person, bookable_specialist) -> None:
    specialist = bookable_specialist(full_name="<script>alert(1)</script>")
    started = datetime.now(timezone.utc) - timedelta(minutes=20)
    past = committed_db.execute(
        """insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
           values (%s, %s, %s, %s) returning id""",
        [specialist.id, client.id, started, started + timedelta(minutes=50)]).fetchone()["id"]

    browser.get(f"{served_functions.base_url}/token-cancel?token=this-link-was-altered")

    assert heading(browser) == "This cancellation link is not valid"
    assert browser.find_elements(By.TAG_NAME, "form") == []
    snap(browser, screenshots, "3-invalid")

    browser.get(cancellation_url(past))

    assert heading(browser) == "This session can no longer be cancelled"
    assert shown(browser)["With"] == "<script>alert(1)</script>"  # shown as text, never run
    assert browser.find_elements(By.TAG_NAME, "form") == []
    snap(browser, screenshots, "5-past")
    assert committed_db.execute("select status from public.sessions").fetchone()["status"] == "confirmed"


def test_a_client_moves_the_session_from_the_emailed_link_in_a_browser(
        browser: webdriver.Chrome, screenshots: Path, served_functions, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, client: Person, bookable_specialist) -> None:
    specialist: BookableSpecialist = bookable_specialist(full_name="Dr Rosa Lind", calendar_id="rosa@clinic.test")
    starts_at = specialist.slot(days_ahead=5, local_time="10:00")
    booked = ServedClient(served_functions.base_url, "booking-create").post_json(
        {"specialist_id": str(specialist.id), "starts_at": starts_at.isoformat()}, headers=bearer(client))
    assert booked.status == 200, booked.text
    session_id = uuid.UUID(booked.json()["session_id"])
    # The day after the session: the 50-minute grid from 08:00 gives 09:40.
    chosen = specialist.slot(days_ahead=6, local_time="09:40")
    day = chosen.astimezone(specialist.zone)

    browser.get(booked.json()["cancel_url"])

    assert heading(browser) == "Cancel this session?"
    assert browser.find_element(By.TAG_NAME, "h2").text == "Or move it to another time"
    summary = browser.find_element(By.XPATH, f"//summary[text()='{day:%A} {day.day} {day:%B}']")
    summary.click()  # opens that day's times
    option = browser.find_element(By.CSS_SELECTOR, f"input[name=starts_at][value='{chosen.isoformat()}']")
    label = option.find_element(By.XPATH, "..")
    assert label.is_displayed() and label.text == "09:40–10:30"
    label.click()
    assert option.is_selected()
    snap(browser, screenshots, "6-reschedule-choose")
    assert committed_db.execute("select starts_at from public.sessions").fetchone()["starts_at"] == starts_at

    move = browser.find_element(By.CSS_SELECTOR, "button.move")
    assert move.text == "Move my session to this time" and move.size["width"] > 300
    move.click()
    WebDriverWait(browser, 15, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Your session has moved"))

    assert shown(browser) == {"Date": f"{day:%A} {day.day} {day:%B %Y}", "Time": "09:40–10:30 (Europe/London)",
                              "With": "Dr Rosa Lind"}
    snap(browser, screenshots, "7-reschedule-moved")
    row = committed_db.execute("select id, starts_at, status from public.sessions").fetchone()
    assert (row["id"], row["starts_at"], row["status"]) == (session_id, chosen, "confirmed")
    event = functions_env.server.events(specialist.calendar_id)[session_id.hex]
    assert datetime.fromisoformat(event["start"]["dateTime"]) == chosen

    browser.get(booked.json()["cancel_url"])  # the same link, after the move

    assert heading(browser) == "Cancel this session?"
    assert shown(browser)["Time"] == "09:40–10:30 (Europe/London)"
