"""What every screen must pass, at a phone's size and a desktop's, in real Chromium.

`Screens.check(page, name)` looks at the page as it is now, first at 390x844 and then
at 1280x800, and returns what is wrong, each line naming the journey, the page and the
size:

a) axe-core, WCAG 2.2 AA rules: no violations (rule id, help, the nodes' targets);
b) nothing wider than the viewport (documentElement.scrollWidth <= innerWidth);
c) every phone number the test knows, wherever it shows as text, sits in a tel: link
   to that number (form fields do not count);
d) nothing the page's Content-Security-Policy would block for a real visitor (looked
   at once, before axe is injected): the checker's context bypasses the CSP only so
   that axe can be injected, and without this check a screenshot could show styles a
   visitor never gets;

and writes a full-page screenshot of each size to the screenshot folder as
`<journey>-<page>-<size>.png`.

`demo_server()` runs the real `outofoffice serve` on a free loopback port with the
firm `outofoffice demo` creates; `read_mail()` reads the file mailer's .eml files.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from outofoffice import sample
from tests.conftest import toml_text
from tests.servers import ServerProcess, run_cli
from tests.smtp_sink import free_port

SIZES = {"phone": (390, 844), "desktop": (1280, 800)}
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
REQUIRE = "OUTOFOFFICE_REQUIRE_BROWSER"
SCREENSHOTS = "OUTOFOFFICE_SCREENSHOTS"

# The phone numbers the demo firm shows: its own and its vendors'.
FIRM_PHONE = "+1 312 555 0140"  # sample.create sets it as the account's contact phone
VENDOR_PHONES = [phone for _, _, _, phone in sample.VENDORS]


def axe_source() -> str:
    """axe.min.js from the axe-playwright-python package (the `test` extra)."""
    try:
        from importlib.resources import files

        return files("axe_playwright_python").joinpath("axe.min.js").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        message = "axe-core is required: pip install -e '.[test]' (axe-playwright-python)"
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(message)
        pytest.skip(f"axe-core is not installed ({message})")


# A short, readable path to an element: body > main > p.field > strong#e-phone
DESCRIBE_JS = """
function describe(el) {
  const parts = [];
  for (let e = el; e && e.nodeType === 1 && parts.length < 4; e = e.parentElement) {
    let part = e.tagName.toLowerCase();
    if (e.id) { parts.unshift(part + "#" + e.id); break; }
    if (e.classList.length) part += "." + [...e.classList].join(".");
    parts.unshift(part);
  }
  return parts.join(" > ");
}
"""

OVERFLOW_JS = (
    "() => {"
    + DESCRIBE_JS
    + """
  const width = window.innerWidth;
  const wide = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (box.width && box.right > width + 0.5) {
      // only the outermost offenders: a child inside an offender that is no wider adds little
      wide.push({el, right: Math.round(box.right)});
    }
  }
  const outer = wide.filter(
    w => !wide.some(o => o !== w && o.el.contains(w.el) && o.right >= w.right));
  return {
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: width,
    widest: outer.slice(0, 6).map(w => describe(w.el) + " (right edge " + w.right + "px)"),
  };
}"""
)

PHONES_JS = (
    "(phones) => {"
    + DESCRIBE_JS
    + """
  const digits = s => s.replace(/\\D/g, "");
  const known = phones.map(digits);
  // a run of digits with the separators people write in phone numbers
  const run = /\\+?\\(?\\d[\\d\\s().\\-\\u2010-\\u2015]{5,}\\d/g;
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode()); ) {
    const el = node.parentElement;
    if (!el || el.closest("script, style, template, noscript, textarea, select, option")) continue;
    if (!el.checkVisibility({visibilityProperty: true})) continue;
    for (const match of node.data.matchAll(run)) {
      const d = digits(match[0]);
      const i = known.findIndex(k => k === d || (d.length >= 10 && k.endsWith(d)));
      if (i < 0) continue;
      const link = el.closest("a[href]");
      const href = link ? link.getAttribute("href") : "";
      let problem = "";
      if (!href.trim().toLowerCase().startsWith("tel:")) problem = "is not inside a tel: link";
      else if (!digits(href).endsWith(d)) {
        problem = "is inside a tel: link to another number (" + href + ")";
      }
      if (problem) {
        const shown = JSON.stringify(match[0].trim());
        found.push(phones[i] + " shown as " + shown + " in " + describe(el) + " " + problem);
      }
    }
  }
  return found;
}"""
)

CSP_JS = (
    "() => {"
    + DESCRIBE_JS
    + """
  const inline = (sel, what) =>
    [...document.querySelectorAll(sel)].map(e => what + " " + describe(e));
  const handlers = [...document.querySelectorAll("*")]
    .filter(e => [...e.attributes].some(a => a.name.startsWith("on")))
    .map(e => "on* handler on " + describe(e));
  return {
    script: [...inline("script:not([src])", "inline <script> in"), ...handlers,
             ...inline("a[href^='javascript:' i]", "javascript: link")],
    style: [...inline("style", "<style> element in"), ...inline("[style]", "style attribute on")],
  };
}"""
)

AXE_JS = """async (tags) => {
  const result = await axe.run(
    document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    targets: v.nodes.map(n => n.target.join(" ")),
  }));
}"""

SETTLE_JS = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def _allows_inline(csp: str, directive: str) -> bool:
    """Whether a CSP header lets inline code of this kind run (no CSP: it does)."""
    rules = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            rules.setdefault(words[0].lower(), words[1:])
    sources = rules.get(directive, rules.get("default-src"))
    return sources is None or "'unsafe-inline'" in sources


@dataclass
class Screens:
    """The checks for one journey: its browser, its screenshot folder, its phones."""

    browser: object
    journey: str
    folder: Path
    phones: list[str] = field(default_factory=list)
    axe: str = ""
    contexts: list = field(default_factory=list)

    def new_page(self):
        """A page in a context of its own (its own cookies), at the phone's size. CSP is
        bypassed so that axe can be injected; the `csp` check keeps that honest."""
        context = self.browser.new_context(viewport=_viewport("phone"), bypass_csp=True)
        self.contexts.append(context)
        page = context.new_page()
        page.csp = ""

        def remember(response):
            if response.request.is_navigation_request() and response.frame == page.main_frame:
                page.csp = response.headers.get("content-security-policy", "")

        page.on("response", remember)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()

    def check(self, page, name: str, extra=None) -> list[str]:
        """Every check at both sizes, and the screenshots; what is wrong, one per line.
        `extra(page)` returns more problems, checked at each size too."""
        # before anything is injected: axe's own script tag would count
        problems = [f"[{self.journey} {name}] {line}" for line in self._csp(page)]
        for size in SIZES:
            page.set_viewport_size(_viewport(size))
            page.evaluate(SETTLE_JS)
            where = f"[{self.journey} {name} @ {size} {'x'.join(map(str, SIZES[size]))}]"
            found = list(extra(page)) if extra else []
            found += self._overflow(page) + self._phones(page) + self._axe(page)
            problems += [f"{where} {line}" for line in found]
            self.folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=self.folder / f"{self.journey}-{name}-{size}.png", full_page=True)
        return problems

    def expect_honest(self, page, name: str, extra=None) -> None:
        fail_on(self.check(page, name, extra), page.url)

    def _csp(self, page) -> list[str]:
        found = page.evaluate(CSP_JS)
        problems = []
        for kind in ("script", "style"):
            if not _allows_inline(page.csp, f"{kind}-src"):
                problems += [
                    f"CSP: {line} is blocked for visitors by {kind}-src" for line in found[kind]
                ]
        return problems

    def _overflow(self, page) -> list[str]:
        o = page.evaluate(OVERFLOW_JS)
        if o["scrollWidth"] <= o["innerWidth"]:
            return []
        return [
            f"overflow: the page is {o['scrollWidth']}px wide in a {o['innerWidth']}px "
            f"viewport; wider than the viewport: {'; '.join(o['widest']) or '(none found)'}"
        ]

    def _phones(self, page) -> list[str]:
        return [f"phone: {line}" for line in page.evaluate(PHONES_JS, self.phones)]

    def _axe(self, page) -> list[str]:
        if not page.evaluate("() => typeof window.axe === 'object'"):
            page.add_script_tag(content=self.axe)
        return [
            f"axe {v['id']} ({v['impact']}): {v['help']}; nodes: {', '.join(v['targets'])}"
            for v in page.evaluate(AXE_JS, WCAG_TAGS)
        ]


def fail_on(problems: list[str], heading: str = "") -> None:
    """Fail with every problem on a line of its own (and no repeat of them by pytest)."""
    if problems:
        pytest.fail("\n".join([heading, *problems] if heading else problems), pytrace=False)


def _viewport(size: str) -> dict:
    width, height = SIZES[size]
    return {"width": width, "height": height}


# --- the served demo firm ---------------------------------------------------------------


@dataclass
class Demo:
    server: ServerProcess
    config: Path
    mail_dir: Path
    routing_url: str
    login_url: str

    @property
    def url(self) -> str:
        return self.server.url

    def cli(self, *args: str) -> str:
        return run_cli(self.config, *args)


def demo_server(folder: Path, slug: str = "sample-firm", **more: dict) -> Demo:
    """`outofoffice demo` on a fresh data dir, then the real `serve` on a free port;
    ``more``: further config sections (``billing__stripe`` for [billing.stripe])."""
    port = free_port()
    sections = {
        "server": {"base_url": f"http://127.0.0.1:{port}"},
        "storage": {"data_dir": str(folder / "data")},
        "mail": {"backend": "file", "from": "Out of Office Pro <noreply@oop.example.test>"},
        # a journey sends more requests from 127.0.0.1 than a caller would in an hour
        "abuse": {"dispatches_per_ip_per_hour": 1000},
    } | {name.replace("__", "."): values for name, values in more.items()}
    config = folder / "config.toml"
    config.write_text(toml_text(sections))
    printed = run_cli(config, "demo", "--slug", slug)
    urls = dict(re.findall(r"^(routing page|owner login):\s+(\S+)", printed, re.MULTILINE))
    assert set(urls) == {"routing page", "owner login"}, printed
    server = ServerProcess(folder, ["--config", str(config)], port).start()
    return Demo(server, config, folder / "data" / "mail", urls["routing page"], urls["owner login"])


def read_mail(mail_dir: Path, wanted, count: int = 1, timeout: float = 15) -> list:
    """The emails in the file mailer's folder for which wanted(message) is true, oldest
    first, waiting until there are `count` (the scheduler sends right after the commit)."""
    deadline = time.monotonic() + timeout
    while True:
        messages = [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
        ]
        found = [m for m in messages if wanted(m)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def text_of(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def screenshot_folder(tmp_path_factory) -> Path:
    chosen = os.environ.get(SCREENSHOTS)
    folder = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def submit_request(page, demo: Demo, phone: str, description: str, category: str = "Plumbing"):
    """A caller fills the routing page and sends it; the page is where that leads."""
    page.goto(demo.routing_url)
    fill_request(page, phone, description, category)
    page.get_by_role("button", name="Send request").click()
    page.wait_for_load_state()


def fill_request(page, phone: str, description: str, category: str = "Plumbing") -> None:
    subject = page.locator("#f-subject")
    if subject.count():
        options = subject.locator("option").evaluate_all("os => os.map(o => o.value)")
        subject.select_option(next(v for v in options if v))
    page.get_by_label(category, exact=False).first.check()
    page.fill("#f-name", "Tina Tenant")
    page.fill("#f-phone", phone)
    page.fill("#f-description", description)


@contextmanager
def running_demo(folder: Path):
    """A journey module's server, stopped however the module ends."""
    demo = demo_server(folder)
    try:
        yield demo
    finally:
        demo.server.stop()


@contextmanager
def journey_screens(browser, journey: str, screenshot_dir: Path, phones: list[str], axe):
    screens = Screens(browser, journey, screenshot_dir, phones, axe)
    try:
        yield screens
    finally:
        screens.close()


def journey_fixtures(journey: str, phones: list[str]):
    """The demo server a journey module shares, and the screens each of its tests gets
    (checking ``phones`` for tel: links)."""

    @pytest.fixture(scope="module")
    def demo(tmp_path_factory):
        with running_demo(tmp_path_factory.mktemp(journey)) as demo:
            yield demo

    @pytest.fixture
    def screens(browser, axe, screenshot_dir):
        with journey_screens(browser, journey, screenshot_dir, phones, axe) as screens:
            yield screens

    return demo, screens


def signed_in_owner(demo: Demo, screens, slug: str = "sample-firm"):
    """A page of ``screens`` signed in as the demo firm's owner, through a fresh login
    link from the CLI."""
    page = screens.new_page()
    page.goto(demo.cli("accounts", "login-link", slug).strip())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard")
    return page
