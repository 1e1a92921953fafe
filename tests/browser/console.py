"""The console in a real browser: Debian's chromium driven by Playwright.

Run by tests/browser.rs with TMIDB_URL (the console), TMIDB_INGEST (the data-manager's
push endpoint), TMIDB_ADMIN_PASSWORD, TMIDB_CLI and TMIDB_HOME (tmidb-cli against the
same supervisor) and TMIDB_SHOTS (where screenshots go). One scenario through the
whole console. On every page: no request leaves 127.0.0.1, no console error, no
Content-Security-Policy violation, and axe-core (vendored) finds no serious or
critical accessibility violation. Exits non-zero on the first failure, saying which
step failed.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

# Waits go through expect() and locators: wait_for_function evaluates its string
# with eval once it has to poll, which the console's CSP refuses (an EvalError).
from playwright.sync_api import expect, sync_playwright

URL = os.environ["TMIDB_URL"].rstrip("/")
INGEST = os.environ["TMIDB_INGEST"].rstrip("/")
PASSWORD = os.environ["TMIDB_ADMIN_PASSWORD"]
SHOTS = os.environ["TMIDB_SHOTS"]
CLI = [os.environ["TMIDB_CLI"], "--home", os.environ["TMIDB_HOME"]]
HERE = os.path.dirname(os.path.abspath(__file__))
AXE = open(os.path.join(HERE, "vendor", "axe-core-4.14.1", "axe.min.js")).read()

problems = []
audited = set()


def watch(page):
    """Records what must never happen on a console page."""
    page.on(
        "console",
        lambda m: m.type == "error" and problems.append(f"console error on {page.url}: {m.text}"),
    )
    page.on("pageerror", lambda e: problems.append(f"script error on {page.url}: {e}"))

    def request(r):
        host = urlparse(r.url).hostname
        if r.url.startswith(("http://", "https://")) and host not in ("127.0.0.1", "localhost"):
            problems.append(f"request to another host: {r.url}")

    page.on("request", request)
    # Registered before any page script runs: CSP violations are kept for check().
    page.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation',"
        " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )


def audit(page):
    """axe-core over the page as it is: serious and critical violations are problems.
    Each page (path) is audited once."""
    path = urlparse(page.url).path
    if path in audited:
        return
    audited.add(path)
    page.evaluate(AXE)
    found = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => v.impact + ' ' + v.id + ': ' + v.help + ' at ' +
                 v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))"""
    )
    problems.extend(f"accessibility on {path}: {v}" for v in found)


def check(page, step):
    """Fails the run if anything was recorded so far, naming the step."""
    audit(page)
    csp = page.evaluate("window.__csp || []")
    problems.extend(f"CSP violation on {page.url}: {v}" for v in csp)
    if problems:
        sys.exit(f"{step}: " + "; ".join(problems))
    print(f"ok: {step}", flush=True)


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def nav(page, name):
    """Follows the main navigation's link `name`."""
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()


def unit_states(page):
    rows = page.locator("table.units tbody tr")
    return {
        rows.nth(i).locator("th").inner_text(): rows.nth(i).locator(".state").inner_text()
        for i in range(rows.count())
    }


def push(token, records):
    """Pushes records to the data-manager as an external system would."""
    req = urllib.request.Request(
        f"{INGEST}/ingest/weather",
        data=json.dumps(records).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def api_get(token, path):
    req = urllib.request.Request(URL + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def main():
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--disable-gpu", "--disable-sync"]
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page = context.new_page()
        watch(page)

        page.goto(URL + "/")
        if not page.url.endswith("/login"):
            sys.exit(f"a stranger should land on the login page, not {page.url}")
        shot(page, "login")
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Log in").click()
        if "wrong user name or password" not in page.locator("[role=alert]").inner_text():
            sys.exit("a wrong password should say so")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(URL + "/dashboard")
        check(page, "log in")

        # Every unit ready (or, for oneshots, exited), as the supervisor says.
        deadline = time.time() + 60
        while True:
            states = unit_states(page)
            waiting = {u: s for u, s in states.items() if s not in ("ready", "exited")}
            if len(states) >= 11 and not waiting:
                break
            if time.time() > deadline:
                sys.exit(f"units not ready on the dashboard: {states}")
            time.sleep(1)
            page.reload()
        check(page, "dashboard shows every unit ready")

        # The dashboard, live in its own tab while the restart below happens.
        dash = context.new_page()
        watch(dash)
        dash.goto(URL + "/dashboard")
        expect(dash.locator("#units-status")).to_have_text("(live)")
        sw_since = dash.locator('tr[data-unit="seaweedfs"] [data-field="since"]')
        since_before = sw_since.inner_text()

        # The logs page, live in another tab while the restart below happens.
        tail = context.new_page()
        watch(tail)
        tail.goto(URL + "/logs")
        expect(tail.locator("#log-status")).to_have_text("live")
        if tail.locator("#log-lines li").count() == 0:
            sys.exit("the logs page should show the last lines")
        check(tail, "the logs page follows every unit live")

        # Restart SeaweedFS from the dependency graph: nothing requires it (the api
        # only wants it), and the confirmation says so before anything happens.
        nav(page, "Units")
        page.wait_for_url(URL + "/units")
        if page.locator(".graph svg .node").count() < 11:
            sys.exit("the dependency graph should draw every unit")
        shot(page, "units")
        check(page, "the units page draws the dependency graph")
        page.get_by_role("link", name="Restart seaweedfs", exact=True).click()
        page.wait_for_url(URL + "/units/seaweedfs/restart")
        if "Nothing else is affected" not in page.content():
            sys.exit("the confirmation of a SeaweedFS restart should say nothing else restarts")
        check(page, "the confirmation says what else restarts")
        page.get_by_role("button", name="Restart seaweedfs").click()
        page.wait_for_url(URL + "/units?done=*")
        if "seaweedfs: restart done" not in page.locator("[role=status]").inner_text():
            sys.exit("the units page should say the restart was done")
        if unit_states(page).get("seaweedfs") != "ready":
            sys.exit(f"seaweedfs should be ready again: {unit_states(page)}")
        check(page, "restart a unit after its confirmation")
        # The open dashboard changed without a reload.
        expect(sw_since).not_to_have_text(since_before, timeout=20000)
        expect(dash.locator('tr[data-unit="seaweedfs"] [data-field="state"]')).to_have_text(
            "ready", timeout=20000
        )
        check(dash, "the dashboard follows the restart live")
        # The open tail showed it as it happened: the api's own line about the restart.
        tail.locator("#log-lines li", has_text="unit control through the api").first.wait_for(
            timeout=20000
        )
        shot(tail, "logs")
        check(tail, "the restart shows up in the live tail")

        # A channel switched off in the browser is off for tmidb-cli, and back.
        def cli_channel(name):
            out = subprocess.run(CLI + ["logs", "channels", "--json"], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"tmidb-cli logs channels failed: {out.stderr}")
            return next(c for c in json.loads(out.stdout) if c["channel"] == name)["enabled"]

        tail.get_by_role("button", name="Switch seaweedfs off").click()
        tail.wait_for_url(URL + "/logs")
        if cli_channel("seaweedfs") is not False:
            sys.exit("switching seaweedfs off in the browser should show in tmidb-cli")
        subprocess.run(CLI + ["logs", "enable", "seaweedfs"], check=True, capture_output=True)
        tail.reload()
        if tail.get_by_role("button", name="Switch seaweedfs off").count() != 1:
            sys.exit("enabling seaweedfs with tmidb-cli should show in the browser")
        check(tail, "channel switches are shared with tmidb-cli")
        tail.close()
        dash.close()

        # A category, created with the schema editor.
        nav(page, "Data")
        page.get_by_role("link", name="New category").click()
        page.wait_for_url(URL + "/data/new")
        page.get_by_label("Name", exact=True).fill("weather")
        page.get_by_label("Description", exact=True).fill("Weather stations <b>not bold</b>")
        page.get_by_label("Name of new field 1").fill("temp")
        page.get_by_label("Type of new field 1").select_option("float")
        page.get_by_label("Name of new field 2").fill("site")
        page.get_by_label("Type of new field 2").select_option("text")
        check(page, "the schema editor")
        page.get_by_role("button", name="Create category").click()
        page.wait_for_url(URL + "/data/weather*")
        if page.locator("p", has_text="Weather stations <b>not bold</b>").count() != 1:
            sys.exit("the description should show as typed (escaped)")
        check(page, "create a category")

        # An API token for the external system that pushes the records.
        page.get_by_role("link", name="admin (admin)").click()
        page.wait_for_url(URL + "/account")
        page.get_by_label("Name", exact=True).fill("station-feed")
        page.get_by_label("Scopes").fill("read:weather write:weather")
        page.get_by_role("button", name="Create token").click()
        token = page.locator("code.secret").inner_text()
        if not token.startswith("tmid_"):
            sys.exit(f"a new token should be shown once: {token!r}")
        shot(page, "account")
        check(page, "create a token")

        # Records pushed through the ingest port: 3 stations over the last 6 hours,
        # and one the schema refuses.
        now = datetime.now(timezone.utc).replace(microsecond=0)
        records = [
            {
                "target": f"station-{s}",
                "ts": (now - timedelta(minutes=5 * i)).isoformat(),
                "temp": round(10 + s + (i % 12) * 0.5, 2),
                "site": "north" if s == 1 else "south",
            }
            for i in range(72)
            for s in (1, 2, 3)
        ]
        records.append({"target": "station-1", "ts": now.isoformat(), "temp": "warm"})
        status, answer = push(token, records)
        if status != 202 or answer.get("accepted") != 216 or answer.get("rejected") != 1:
            sys.exit(f"the push should take 216 records and refuse 1: {status} {answer}")

        # The explorer shows them (newest first), with the chart, once all 216 are
        # stored: the data-consumers write in batches, not in time order, so the first
        # 100 stored need not hold the newest.
        deadline = time.time() + 60
        while api_get(token, "/api/v1/categories/weather/export?format=csv").count(b"\r\n") < 217:
            if time.time() > deadline:
                sys.exit("the 216 pushed records should be stored within a minute")
            time.sleep(0.5)
        page.goto(URL + "/data/weather")
        if page.locator("#rows tr").count() < 100:
            sys.exit("the explorer should show a first page of 100 records")
        first = page.locator("#rows tr").first.locator("td.ts").inner_text()
        if not first.startswith(now.strftime("%Y-%m-%dT%H:%M")):
            sys.exit(f"the newest record should come first: {first}")
        lines = page.locator("svg.chart g.line")
        if lines.count() != 3 or page.locator("svg.chart circle").count() < 30:
            sys.exit("the chart should draw one line per station with its buckets")
        page.screenshot(path=os.path.join(SHOTS, "explorer.png"))
        check(page, "see the records in the explorer and the chart")

        # New records appear on the open first page by themselves.
        status, _ = push(token, [{"target": "station-9", "ts": (now + timedelta(seconds=1)).isoformat(), "temp": 99.5}])
        expect(page.locator("#rows tr").first).to_contain_text("station-9", timeout=20000)
        check(page, "a new record appears live")

        # A filter in the form, kept in the URL; the CSV export of exactly that
        # selection is the REST API's export of the same parameters.
        page.get_by_label("Target").fill("station-2")
        page.get_by_label("Filter 1: field").select_option("temp")
        page.get_by_label("Filter 1: comparison").select_option("gte")
        page.get_by_label("Filter 1: value").fill("15")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url("**/data/weather?*target=station-2*")
        shown = page.locator("#rows tr").count()
        if shown == 0 or page.locator("#rows tr", has_text="station-1").count():
            sys.exit(f"the filter should show station-2 only ({shown} rows)")
        with page.expect_download() as d:
            page.get_by_role("link", name="CSV").click()
        exported = open(d.value.path(), "rb").read()
        query = urllib.parse.urlencode(
            [("format", "csv"), ("target", "station-2"), ("filter", "temp:gte:15"), ("order", "desc")]
        )
        expected = api_get(token, f"/api/v1/categories/weather/export?{query}")
        if exported != expected or exported.count(b"\r\n") != shown + 1:
            sys.exit(
                f"the console's CSV ({len(exported)} bytes) should be the API's ({len(expected)} bytes)"
                f" and hold the {shown} rows shown"
            )
        check(page, "export CSV with the on-screen filter, as the API exports it")

        # Fix the refused record and replay it.
        nav(page, "Dead letters")
        page.locator("table.letters a").first.click()
        page.wait_for_url(URL + "/dead-letters/*")
        raw = page.get_by_label("Record (JSON)")
        fixed = json.loads(raw.input_value())
        fixed["temp"] = "warm!"
        raw.fill(json.dumps(fixed))
        page.get_by_role("button", name="Save the fix").click()
        if "expected a number" not in page.locator("[role=alert]").inner_text():
            sys.exit("a fix that is still wrong should be refused with the reason")
        fixed["temp"] = 21.25
        raw.fill(json.dumps(fixed))
        page.get_by_role("button", name="Save and replay").click()
        page.wait_for_url("**done=replayed*")
        if page.get_by_role("heading", name="As received").count() != 1:
            sys.exit("the record as received should stay beside the fix")
        shot(page, "dead-letter")
        check(page, "fix and replay a dead letter")
        deadline = time.time() + 30
        while "21.25" not in api_get(token, "/api/v1/categories/weather/records?target=station-1&filter=temp:eq:21.25").decode():
            if time.time() > deadline:
                sys.exit("the replayed record should be stored")
            time.sleep(0.5)

        # An alert rule's backtest over the day just stored.
        nav(page, "Alerts")
        page.get_by_label("Name", exact=True).fill("hot")
        page.get_by_label("Category", exact=True).select_option("weather")
        page.get_by_label("Field (threshold)").fill("temp")
        page.get_by_label("Value (threshold)").fill("16")
        page.get_by_role("button", name="Preview over the last day").click()
        if page.locator(".preview").count() != 1 or "firing" not in page.locator(".preview").inner_text():
            sys.exit("the preview should say what the rule would have fired")
        check(page, "preview an alert rule over the last day")

        # A file: uploaded (with progress), listed, downloaded as it was.
        nav(page, "Files")
        page.wait_for_url(URL + "/files")
        content = b"station,notes\r\n1,calibrated\r\n" * 1000
        page.get_by_label("Category", exact=True).select_option("weather")
        page.get_by_label("Target", exact=True).fill("station-1")
        page.get_by_label("File").set_input_files(
            files=[{"name": "calibration.csv", "mimeType": "text/csv", "buffer": content}]
        )
        page.get_by_role("button", name="Upload").click()
        page.wait_for_url("**/files?done=*")
        with page.expect_download() as d:
            page.get_by_role("link", name="calibration.csv").click()
        if open(d.value.path(), "rb").read() != content:
            sys.exit("the downloaded file should be the uploaded one")
        shot(page, "files")
        check(page, "upload and download a file")

        # The token is revoked: the ingest port refuses it from then on.
        page.get_by_role("link", name="admin (admin)").click()
        page.get_by_role("button", name="Revoke station-feed").click()
        page.wait_for_url(URL + "/account")
        if "revoked" not in page.locator("table").first.inner_text():
            sys.exit("the revoked token should say so")
        status, _ = push(token, records[:1])
        if status != 401:
            sys.exit(f"a revoked token should be refused by the ingest port, not {status}")
        check(page, "revoke the token")

        nav(page, "Dashboard")
        page.wait_for_url(URL + "/dashboard")
        if page.locator("svg.spark").count() < 2:
            sys.exit("the dashboard should draw the last hour's ingest per category and source")
        shot(page, "dashboard")
        check(page, "the dashboard shows the last hour's ingest")

        page.get_by_role("button", name="Log out", exact=True).click()
        page.wait_for_url(URL + "/login")
        page.goto(URL + "/dashboard")
        if not page.url.endswith("/login"):
            sys.exit("after logging out, the dashboard should send back to the login page")
        check(page, "log out")
        print(f"audited {len(audited)} pages with axe-core", flush=True)
        browser.close()


main()
