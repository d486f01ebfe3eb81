"""The dashboard in a real headless browser: Debian's chromium, driven by
selenium through chromedriver, against `pyfwd start --metrics` in a
one-arm DR lab (two whoami real servers).

The browser runs inside the balancer's namespace (a thread of this test
entered it: chromedriver, chromium and selenium's connections are made
from there), where the dashboard listens on loopback.  The page shows the
VIP and its real servers; an action without the token, or with a wrong
one, is refused (403) and changes nothing; with the token, a click on
Drain drains the real server (in the page and in `pyfwd ctl show`) and the
events list says so; so does a weight typed in, and the HA role set as
keepalived would.  A screenshot is left in the test's temporary folder.
Root; the lab is removed whatever happens.
"""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import textwrap

import pytest

from pyfwd.control.server import Client
from pyfwd.lab.programs import PYFWD

from . import labs
from .procs import curl, wait_line

pytestmark = pytest.mark.root

VIP4 = "10.0.0.100"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 20               # seconds the page may take to show a change


@pytest.fixture(scope="module")
def lab():
    lab = labs.build("pfd", "one-arm", reals=2, dr_vip=VIP4)
    try:
        yield lab
    finally:
        lab.down()


def write_config(tmp_path, token_file):
    cfg = tmp_path / "pyfwd.toml"
    cfg.write_text(textwrap.dedent(f"""
        [engine]
        iface = "eth0"
        control_socket = "{tmp_path / 'pyfwd.sock'}"
        metrics = "127.0.0.1:0"
        dashboard_token = "{token_file}"

        [[vip]]
        name = "pacs-web"
        address = "{VIP4}"
        port = 80
        scheduler = "rr"
        health = {{ type = "tcp", interval = 0.5, timeout = 0.3 }}

        [[vip.real]]
        address = "10.0.0.11"

        [[vip.real]]
        address = "10.0.0.12"
        """))
    return cfg


def token_file(tmp_path, mode=0o600):
    path = tmp_path / f"token-{mode:o}"
    path.write_text(secrets.token_urlsafe(24) + "\n")
    os.chmod(path, mode)
    return path


def test_a_token_file_others_may_read_refuses_to_start(lab, tmp_path):
    cfg = write_config(tmp_path, token_file(tmp_path, 0o644))
    r = lab.run("lb", PYFWD + ["start", "--config", str(cfg)],
                capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "dashboard token" in r.stderr and "chmod 600" in r.stderr
    assert "Traceback" not in r.stderr


def states(sock):
    """{real: state} of pacs-web, as `pyfwd ctl show` has them."""
    with Client(str(sock)) as c:
        vip, = c.call("show")
    return {r["real"]: r["state"] for r in vip["reals"]}


def browser():
    """A headless chromium under selenium, nothing downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1400,900",
                "--no-first-run", "--disable-background-networking"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                            options=opts)


FETCH = """
const [token, done] = [arguments[0], arguments[arguments.length - 1]];
const headers = {"Content-Type": "application/json"};
if (token !== null) headers["X-Pyfwd-Token"] = token;
fetch("/api/action", {method: "POST", headers, body: JSON.stringify(
    {action: "halt", vip: "pacs-web", real: "10.0.0.12"})})
  .then(async (r) => done([r.status, await r.json()]))
  .catch((e) => done([0, String(e)]));
"""


def session(url, token, sock, shot):
    """The browser's part, run inside the balancer's namespace; what it
    saw, for the test to check."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    seen = {}
    d = browser()
    try:
        d.set_script_timeout(10)
        wait = WebDriverWait(d, WAIT)
        d.get(url)

        def row(real):
            return d.find_element(
                By.CSS_SELECTOR, f"section.vip[data-vip='pacs-web'] "
                f"tr[data-real='{real}']")

        def state(real):
            return row(real).find_element(By.CSS_SELECTOR,
                                          "td.col-state").text

        wait.until(lambda _: state("10.0.0.11") == "online" and
                   state("10.0.0.12") == "online")
        # the client's loop of requests: rates from successive snapshots
        wait.until(lambda _: all(row(r).find_element(
            By.CSS_SELECTOR, "td.col-frames-s").text not in ("0", "–")
            for r in ("10.0.0.11", "10.0.0.12")))
        seen["title"] = d.title
        seen["vip"] = d.find_element(By.CSS_SELECTOR,
                                     "section.vip h2").text
        seen["role"] = d.find_element(By.CSS_SELECTOR, "dd.role").text
        seen["health"] = row("10.0.0.11").find_element(
            By.CSS_SELECTOR, "td.col-health").text
        seen["access"] = d.find_element(By.ID, "access-text").text
        drain = row("10.0.0.11").find_element(
            By.CSS_SELECTOR, "button[data-action='drain']")
        seen["locked_disabled"] = not drain.is_enabled()
        # from the page itself, without the token and with a wrong one
        seen["no_token"] = d.execute_async_script(FETCH, None)
        seen["wrong_token"] = d.execute_async_script(FETCH, "x" * 32)
        # a wrong token typed in: the click is refused, nothing changes
        d.find_element(By.ID, "token").send_keys("wrong-" + "y" * 26)
        d.find_element(By.ID, "unlock").click()
        wait.until(lambda _: drain.is_enabled())
        drain.click()
        wait.until(lambda _: "refused" in d.find_element(
            By.ID, "message").text)
        seen["wrong_message"] = d.find_element(By.ID, "message").text
        seen["after_wrong"] = states(sock)
        # the token asked again; the right one this time
        wait.until(lambda _: d.find_element(By.ID, "token").is_displayed())
        d.find_element(By.ID, "token").send_keys(token)
        d.find_element(By.ID, "unlock").click()
        wait.until(lambda _: drain.is_enabled())
        drain.click()
        wait.until(lambda _: state("10.0.0.11") == "drain")
        seen["message"] = d.find_element(By.ID, "message").text
        seen["after"] = states(sock)
        seen["drain_disabled"] = not row("10.0.0.11").find_element(
            By.CSS_SELECTOR, "button[data-action='drain']").is_enabled()
        # a weight typed in
        row("10.0.0.12").find_element(By.CSS_SELECTOR,
                                      "input.weight").send_keys("5")
        row("10.0.0.12").find_element(
            By.CSS_SELECTOR, "button[data-action='weight']").click()
        wait.until(lambda _: row("10.0.0.12").find_element(
            By.CSS_SELECTOR, "td.col-weight").text == "5")
        with Client(str(sock)) as c:
            seen["weights"] = {r["real"]: r["weight"]
                               for r in c.call("show")[0]["reals"]}
            c.call("ha", role="standby")    # as keepalived would
        wait.until(lambda _: d.find_element(By.CSS_SELECTOR,
                                            "dd.role").text == "standby")
        wait.until(lambda _: "active -> standby" in d.find_element(
            By.ID, "events").text)
        seen["events"] = [tr.text for tr in d.find_elements(
            By.CSS_SELECTOR, "#events tbody tr")]
        d.save_screenshot(str(shot))
        # errors of the page (script, CSP), the refusals above left out
        seen["console"] = [e for e in d.get_log("browser")
                           if e.get("level") == "SEVERE" and "403 "
                           "(Forbidden)" not in e.get("message", "")]
        return seen
    finally:
        d.quit()


def test_the_dashboard_in_a_browser(lab, tmp_path):
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), \
        "chromium and chromium-driver (Debian packages) are needed"
    token = token_file(tmp_path)
    cfg = write_config(tmp_path, token)
    sock = tmp_path / "pyfwd.sock"
    proc = lab.popen("lb", PYFWD + ["start", "--config", str(cfg),
                                    "--busy-poll", "0"],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     text=True)
    load = None
    try:
        line = wait_line(proc, "dashboard at")[-1]
        assert "dashboard at" in line and "actions with the token" in line
        url = re.search(r"dashboard at (http://\S+/)", line).group(1)
        assert "node=real" in curl(lab, f"http://{VIP4}/").stdout
        load = lab.popen("client", ["sh", "-c", "while :; do curl -s -o "
                                    f"/dev/null http://{VIP4}/; sleep 0.05; "
                                    "done"])
        shot = tmp_path / "dashboard.png"
        seen = lab.call("lb", lambda: session(
            url, token.read_text().strip(), sock, shot), timeout=240)
    finally:
        if load:
            load.kill()
            load.wait(timeout=5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert seen["title"] == "pyfwd dashboard"
    assert seen["vip"] == f"pacs-web {VIP4}:80/tcp"
    assert seen["role"] == "active" and seen["health"] == "up"
    assert seen["access"].startswith("Actions need the token")
    assert seen["locked_disabled"]
    assert seen["no_token"][0] == 403 and "token" in \
        seen["no_token"][1]["error"]
    assert seen["wrong_token"][0] == 403
    assert "refused (403)" in seen["wrong_message"]
    assert seen["after_wrong"] == {"10.0.0.11": "online",
                                   "10.0.0.12": "online"}
    assert seen["message"] == "drain 10.0.0.11 of pacs-web: done"
    assert seen["after"] == {"10.0.0.11": "drain", "10.0.0.12": "online"}
    assert any(e.split()[1:] == ["state", "pacs-web", "10.0.0.11", "drain"]
               for e in seen["events"]), seen["events"]
    assert seen["drain_disabled"]
    assert seen["weights"] == {"10.0.0.11": 1, "10.0.0.12": 5}
    assert any(e.split()[1:] == ["weight", "pacs-web", "10.0.0.12", "weight",
                                 "1", "->", "5"] for e in seen["events"])
    assert any(e.split()[1:] == ["ha", "active", "->", "standby"]
               for e in seen["events"]), seen["events"]
    assert seen["console"] == [], seen["console"]
    assert shot.stat().st_size > 10000
    # kept: a restart would replay it (the state file), as for ctl
    state = json.loads((tmp_path / "pyfwd.toml.state").read_text())
    assert "drain" in json.dumps(state)
