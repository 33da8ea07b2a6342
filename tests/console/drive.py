"""Drives the Squall console in headless Chromium (Debian's chromium and
chromium-driver, Selenium from PyPI), as tests/tests/console.rs asks:

- without a token the page shows the login form and no data;
- with the token: the catalog lists the tables; TPC-H Q5 is submitted through
  the SQL editor (the tables it names filled in from the catalog), the job
  page follows it to `succeeded`, its stage graph has every stage the API
  planned, its timeline a bar for every attempt the API lists (one of them a
  failed attempt that was retried), and its result rows are the reference
  answer's; a schedule is enabled from the schedules page;
- the jobs list and the job page are saved as screenshots (1280×800), the job
  page also at 400 px wide, where nothing may overflow the page sideways;
- Tab reaches the navigation; who is logged in is shown; the browser logged no error.

Exits non-zero naming the first check that failed.
"""

import argparse
import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait


def api(base, token, path):
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def until(driver, wait, condition, what):
    """Waits for `condition`; on timeout, fails naming `what`, with the page's
    text and the browser's log."""
    try:
        return wait.until(condition)
    except Exception as error:  # selenium's TimeoutException and friends
        main = driver.find_elements(By.ID, "main")
        text = main[0].text[:2000] if main else driver.page_source[:2000]
        raise AssertionError(f"{what}: {type(error).__name__}; page: {text!r}; log: {driver.get_log('browser')}")


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def same(expected, shown):
    """Equal text, or numbers equal to the cent (the page shows JSON numbers)."""
    try:
        return abs(float(expected) - float(shown)) <= 0.01 + 1e-9 * abs(float(expected))
    except ValueError:
        return expected == shown


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--sql-file", required=True)
    parser.add_argument("--expected", required=True, help="reference answer, pipe-delimited with a header")
    parser.add_argument("--out", required=True, help="folder for the screenshots")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    # The console re-renders a view in place (the login form after a refusal,
    # a job page on every poll): an element found a moment ago may be gone by
    # the time its text is read, so a wait looks again rather than failing.
    wait = WebDriverWait(driver, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    try:
        run(driver, wait, args)
    finally:
        driver.quit()


def run(driver, wait, args):
    base = args.url.rstrip("/")
    driver.get(base + "/#/jobs")
    # No token: the login form, and nothing of the jobs.
    wait.until(ec.visibility_of_element_located((By.ID, "token")))
    check(not driver.find_elements(By.ID, "jobs"), "the jobs table shows without a token")
    check(driver.find_element(By.ID, "nav").get_attribute("hidden") is not None, "navigation shows without a token")
    # A wrong token is refused and the login stays.
    driver.find_element(By.ID, "token").send_keys("not-the-token")
    driver.find_element(By.ID, "login").click()
    wait.until(lambda d: "refused" in d.find_element(By.ID, "login-error").text)
    check(not driver.find_elements(By.ID, "jobs"), "the jobs table shows with a wrong token")

    token = driver.find_element(By.ID, "token")
    token.clear()
    token.send_keys(args.token)
    driver.find_element(By.ID, "login").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "nav a[aria-current=page]")))
    # Who is logged in: the token's principal and role.
    wait.until(lambda d: d.find_element(By.ID, "who").text != "")
    who = driver.find_element(By.ID, "who").text
    check(who == "admin (admin)", f"the page shows who is logged in as {who!r}")
    # The wrong token's 401 was logged on purpose: from here on, none may be.
    driver.get_log("browser")

    # Keyboard: Tab from the top reaches the navigation links.
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    reached = []
    for _ in range(40):  # the filters and a page of 25 job links come first
        # The list refreshes every 2 s: read the focused element and press Tab
        # at once, to the page rather than to an element that may be replaced.
        tag, text = driver.execute_script("const a = document.activeElement; return [a.tagName, a.innerText];")
        reached.append(text)
        if tag == "A" and text in ("Jobs", "Submit"):
            break
        ActionChains(driver).send_keys(Keys.TAB).perform()
    check(any(r in ("Jobs", "Submit") for r in reached), f"Tab never reached the navigation: {reached}")

    # Catalog: every table with its columns.
    driver.get(base + "/#/catalog")
    until(driver, wait, lambda d: "lineitem" in d.find_element(By.ID, "main").text, "the catalog page")
    check("l_orderkey" in driver.find_element(By.ID, "main").text, "the catalog shows no columns")

    # Submit Q5 through the editor.
    driver.get(base + "/#/submit")
    sql = wait.until(ec.visibility_of_element_located((By.ID, "sql")))
    with open(args.sql_file) as f:
        sql.send_keys(f.read())
    tables = driver.find_element(By.ID, "tables").get_attribute("value").split()
    for name in ("customer", "orders", "lineitem", "supplier", "nation", "region"):
        check(name in tables, f"the editor did not fill in table {name}: {tables}")
    driver.find_element(By.ID, "submit").click()
    until(driver, wait, lambda d: "#/jobs/" in d.current_url, "the job page after submitting")
    job = driver.current_url.split("#/jobs/")[1]
    until(driver, wait, lambda d: d.find_element(By.ID, "job-state").text == "succeeded", "the job succeeding")
    time.sleep(1.5)  # the last poll draws the final attempts

    plan = api(base, args.token, f"/v1/jobs/{job}/plan")
    nodes = driver.find_elements(By.CSS_SELECTOR, "svg#dag g.node")
    check(sorted(int(n.get_attribute("data-stage")) for n in nodes) == sorted(s["stage"] for s in plan["stages"]),
          f"the graph shows {len(nodes)} stages, the plan has {len(plan['stages'])}")
    steps = [n for n in nodes if n.get_attribute("data-kind") in ("combine", "merge")]
    check(steps, "the graph shows no combine step of a two-level exchange")
    readers = [s["stage"] for s in plan["stages"] if any(e["mode"] == "two-level" for e in s.get("exchanges", []))]
    check(readers, f"the plan shows no stage reading two-level: {plan['stages']}")
    reader = next(n for n in nodes if int(n.get_attribute("data-stage")) == readers[0])
    title = reader.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    check("two-level" in title and "GETs" in title, f"stage {readers[0]} does not say how it reads: {title}")
    places = {int(n.get_attribute("data-stage")): n.get_attribute("data-place") for n in nodes}
    planned = {s["stage"]: s.get("placement", {}).get("place", "") for s in plan["stages"]}
    # A stage fused into another runs no tasks: placed nowhere, drawn as run by that stage.
    fused = {int(n.get_attribute("data-stage")) for n in nodes
             if "run by the tasks of stage" in n.get_attribute("textContent")}
    ran = {s: p for s, p in places.items() if s not in fused}
    check(places == planned and set(ran.values()) == {"local"} and all(places[s] == "" for s in fused),
          f"the graph says stages run at {places}, the plan at {planned}, fused {fused}")
    check("runs in-process" in reader.find_element(By.TAG_NAME, "title").get_attribute("textContent"),
          f"stage {readers[0]} does not say where it runs")
    attempts = api(base, args.token, f"/v1/jobs/{job}/attempts")["attempts"]
    bars = driver.find_elements(By.CSS_SELECTOR, "svg#timeline rect.bar")
    shown = sorted(b.get_attribute("data-attempt") for b in bars)
    listed = sorted(f"{a['stage']}/{a['task']}/{a['attempt']}" for a in attempts)
    check(shown == listed, f"timeline bars {shown} are not the attempts {listed}")
    check({b.get_attribute("data-place") for b in bars} == {"local"}, "attempt bars do not say where they ran")
    outcomes = [b.get_attribute("data-outcome") for b in bars]
    check("retried" in outcomes, f"no failed-then-retried attempt in the timeline: {outcomes}")
    retried = next(b for b in bars if b.get_attribute("data-outcome") == "retried")
    check("injected" in retried.get_attribute("aria-label"), "a failed attempt's bar does not carry its message")

    with open(args.expected) as f:
        expected = [line.rstrip("\n").split("|") for line in f if line.strip()]
    header = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "table#result thead th")]
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in driver.find_elements(By.CSS_SELECTOR, "table#result tbody tr")]
    check(header == expected[0], f"result columns {header}, expected {expected[0]}")
    check(len(rows) == len(expected) - 1, f"{len(rows)} result rows, expected {len(expected) - 1}")
    for got, want in zip(rows, expected[1:]):
        check(all(same(w, g) for w, g in zip(want, got)), f"result row {got}, expected {want}")
    check("SortPreservingMergeExec" in driver.find_element(By.ID, "plan-text").text
          or "stage 1" in driver.find_element(By.ID, "plan-text").text, "no plan text")
    driver.save_screenshot(os.path.join(args.out, "job-page.png"))
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 120, 4000))
    time.sleep(0.3)
    driver.save_screenshot(os.path.join(args.out, "job-page-full.png"))
    driver.set_window_size(1280, 800)

    # Narrow: nothing overflows the page sideways.
    driver.set_window_size(400, 900)
    time.sleep(0.5)
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check(overflow <= 1, f"the job page overflows a 400 px screen by {overflow} px")
    driver.save_screenshot(os.path.join(args.out, "job-page-narrow.png"))
    driver.set_window_size(1280, 800)

    driver.get(base + "/#/jobs")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"table#jobs tr[data-job='{job}']")))
    # Newest first: the job just submitted heads the list though more jobs
    # than a page holds ran before it.
    first = driver.find_element(By.CSS_SELECTOR, "table#jobs tbody tr").get_attribute("data-job")
    check(first == job, f"the newest job {job} is not first in the list ({first} is)")
    driver.save_screenshot(os.path.join(args.out, "jobs.png"))

    # Schedules: enable the disabled one.
    driver.get(base + "/#/schedules")
    button = wait.until(ec.element_to_be_clickable((By.XPATH, "//table[@id='schedules']//button[text()='Enable']")))
    button.click()
    wait.until(ec.presence_of_element_located((By.XPATH, "//table[@id='schedules']//button[text()='Disable']")))
    schedules = api(base, args.token, "/v1/schedules")["schedules"]
    check(all(s["enabled"] for s in schedules), "the schedule was not enabled")

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    check(not errors, f"the browser logged errors: {errors}")
    print(f"console: job {job}, {len(nodes)} stages, {len(bars)} attempts, screenshots in {args.out}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"console check failed: {failure}", file=sys.stderr)
        sys.exit(1)
