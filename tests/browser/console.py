"""The console in a real browser: Debian's chromium driven by Playwright.

Run by tests/browser.rs with TMIDB_URL (the console), TMIDB_ADMIN_PASSWORD and
TMIDB_SHOTS (where screenshots go). On every page: no request leaves 127.0.0.1, no
console error, no Content-Security-Policy violation. Exits non-zero on the first
failure, saying which step failed.
"""

import json
import os
import subprocess
import sys
import time
from urllib.parse import urlparse

# Waits go through expect() and locators: wait_for_function evaluates its string
# with eval once it has to poll, which the console's CSP refuses (an EvalError).
from playwright.sync_api import expect, sync_playwright

URL = os.environ["TMIDB_URL"].rstrip("/")
PASSWORD = os.environ["TMIDB_ADMIN_PASSWORD"]
SHOTS = os.environ["TMIDB_SHOTS"]
CLI = [os.environ["TMIDB_CLI"], "--home", os.environ["TMIDB_HOME"]]

problems = []


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


def check(page, step):
    """Fails the run if anything was recorded so far, naming the step."""
    csp = page.evaluate("window.__csp || []")
    problems.extend(f"CSP violation on {page.url}: {v}" for v in csp)
    if problems:
        sys.exit(f"{step}: " + "; ".join(problems))
    print(f"ok: {step}", flush=True)


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def unit_states(page):
    rows = page.locator("table.units tbody tr")
    return {
        rows.nth(i).locator("th").inner_text(): rows.nth(i).locator(".state").inner_text()
        for i in range(rows.count())
    }


def main():
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--disable-gpu", "--disable-sync"]
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
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
            if len(states) >= 8 and not waiting:
                break
            if time.time() > deadline:
                sys.exit(f"units not ready on the dashboard: {states}")
            time.sleep(1)
            page.reload()
        shot(page, "dashboard")
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

        # Restart SeaweedFS: nothing requires it (the api only wants it), and the
        # confirmation says so before anything happens.
        page.get_by_role("link", name="Units").click()
        page.wait_for_url(URL + "/units")
        shot(page, "units")
        page.locator('a[href="/units/seaweedfs/restart"]').click()
        page.wait_for_url(URL + "/units/seaweedfs/restart")
        if "Nothing else is affected" not in page.content():
            sys.exit("the confirmation of a SeaweedFS restart should say nothing else restarts")
        shot(page, "confirm-restart")
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

        # An API token: created (shown once), then revoked, on the account page.
        page.get_by_role("link", name="admin (admin)").click()
        page.wait_for_url(URL + "/account")
        page.get_by_label("Name").fill("browser-token")
        page.get_by_label("Scopes").fill("read:*")
        page.get_by_role("button", name="Create token").click()
        secret = page.locator("code.secret").inner_text()
        if not secret.startswith("tmid_"):
            sys.exit(f"a new token should be shown once: {secret!r}")
        shot(page, "account")
        page.get_by_role("button", name="Revoke browser-token").click()
        page.wait_for_url(URL + "/account")
        if "revoked" not in page.locator("table").first.inner_text():
            sys.exit("the revoked token should say so")
        check(page, "create and revoke a token")

        page.get_by_role("button", name="Log out", exact=True).click()
        page.wait_for_url(URL + "/login")
        page.goto(URL + "/dashboard")
        if not page.url.endswith("/login"):
            sys.exit("after logging out, the dashboard should send back to the login page")
        check(page, "log out")
        browser.close()


main()
