"""The console as people use it: headless chromium against a real gateway (real model,
real index, real registry, real trace file). Sign in per role; promote and roll back and
see the served version change; find who was shown a document; a viewer gets 403 on the
audit page and on the JSON behind it. Screenshots land in tmp/artifacts/console/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.gateway.console.conftest import ARTIFACTS, Console

pytestmark = pytest.mark.slow
SALARY = "policies:hr/salary-bands-2026.md"


@pytest.fixture
def signed_in(console: Console, browser: Browser) -> Iterator:
    """``signed_in(user)``: a fresh browser context signed in through the form as ``user``."""
    contexts = []

    def sign_in(user: str, next_path: str = "/console") -> Page:
        context = browser.new_context(base_url=console.url)
        contexts.append(context)
        page = context.new_page()
        page.goto(f"/console/login?next={next_path}")
        page.get_by_label("API key").fill(console.keys[user])
        page.get_by_role("button", name="Sign in").click()
        return page

    yield sign_in
    for context in contexts:
        context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def served_adapter(console: Console, user: str = "hana") -> str:
    client = openai.OpenAI(base_url=f"{console.url}/v1", api_key=console.keys[user], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="hr-style", messages=[{"role": "user", "content": "Say hello."}], max_tokens=4
    )
    return raw.headers["x-carafe-adapter"]


@pytest.mark.parametrize(
    ("user", "pages"),
    [
        ("root", ["Adapters", "Tuning", "Index", "Activity", "Audit", "Guards", "Keys"]),
        ("audrey", ["Audit", "Guards"]),
        ("victor", ["Adapters", "Tuning", "Index", "Activity"]),
    ],
)
def test_each_role_signs_in_and_sees_its_pages(signed_in, user, pages):
    page = signed_in(user)
    nav = page.get_by_role("navigation", name="Console pages")
    expect(nav.get_by_role("link")).to_have_text(pages)
    expect(page).to_have_url(re.compile(f"/console/{pages[0].lower()}$"))
    shot(page, f"signed-in-{user}")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile("/console/login$"))
    assert page.goto(f"/console/{pages[0].lower()}").url.endswith(f"/console/login?next=/console/{pages[0].lower()}")


def test_keys_without_a_console_role_or_unknown_are_refused(console, browser):
    context = browser.new_context(base_url=console.url)
    page = context.new_page()
    for key, message in [(console.keys["hana"], "no console role"), ("crf_nope_nope", "unknown or revoked")]:
        page.goto("/console/login")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text(message)
    assert page.request.get("/console/api/adapters").status == 401
    shot(page, "login-refused")
    context.close()


def test_a_session_is_a_strict_cookie_that_ends_with_its_key_and_never_redirects_off_site(console, browser):
    keys = console.state_keys()
    key, record = keys.create("vera", roles=["viewer"])
    context = browser.new_context(base_url=console.url)
    page = context.new_page()
    page.goto("/console/login?next=https://evil.example/console")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:\d+/console/adapters$"))
    [cookie] = context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/console")
    assert key not in cookie["value"]
    keys.revoke(record.key_id)
    page.goto("/console/adapters")
    expect(page).to_have_url(re.compile("/console/login"))
    assert page.request.get("/console/api/adapters").status == 401
    context.close()


def test_a_viewer_gets_403_on_the_audit_page_and_its_json(signed_in):
    page = signed_in("victor")
    response = page.goto(f"/console/audit?doc={SALARY}")
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("may not see the audit page")
    shot(page, "viewer-audit-403")
    for path in (
        f"/console/api/audit?doc={SALARY}",
        "/console/api/audit/export.csv?user=hana",
        "/console/api/index/documents",
    ):
        r = page.request.get(path)
        assert r.status == 403 and r.json()["error"]["code"] == "insufficient_permissions", path
    r = page.request.post("/console/api/adapters/hr-style/apply", data={"action": "rollback"})
    assert r.status == 403  # a viewer never changes anything, CSRF header or not
    page.goto("/console/adapters")  # read-only: channels and versions, no buttons
    expect(page.get_by_role("heading", name="hr-style")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Promote|Roll back|canary"))).to_have_count(0)
    page.goto("/console/index")
    expect(page.get_by_role("heading", name="Last sync")).to_be_visible()
    expect(page.get_by_role("heading", name="Documents")).to_have_count(0)
    status = page.request.get("/console/api/index").json()  # status, not where files live or which failed
    assert status["stats"]["documents"] == 2 and status["last_sync"]["counts"]["added"] == 2
    assert "store" not in status["stats"] and "failed" not in status["last_sync"]
    assert [set(s) for s in status["sources"]] == [{"name", "default_acl"}]


def test_an_auditor_may_not_see_adapters_or_index(signed_in):
    page = signed_in("audrey")
    for path in ("/console/adapters", "/console/index"):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
    assert page.request.get("/console/api/adapters").status == 403


def _confirm(page: Page, expected: list[list[str]]) -> None:
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    rows = dialog.locator("#confirm-changes tr")
    expect(rows).to_have_count(len(expected))
    for row, cells in zip(rows.all(), expected, strict=True):
        expect(row.locator("td")).to_have_text(cells)
    dialog.get_by_role("button", name="Apply").click()


def test_admin_promotes_and_rolls_back_and_the_served_version_follows(console, signed_in):
    assert served_adapter(console) == "hr-style@1"  # the first version added became stable
    page = signed_in("root", "/console/adapters")
    hr = page.locator('section[data-adapter="hr-style"]')  # benefits-qa has its own buttons
    stable = hr.locator('td[data-field="stable"]')
    expect(stable).to_have_text("1")
    hr.get_by_role("button", name="Promote 2 to stable").click()
    shot(page, "adapters-confirm-promote")
    _confirm(page, [["stable", "1", "2"]])
    expect(stable).to_have_text("2")
    assert served_adapter(console) == "hr-style@2"
    shot(page, "adapters-promoted")

    hr.get_by_role("button", name="Roll back stable").click()
    _confirm(page, [["stable", "2", "1"]])
    expect(stable).to_have_text("1")
    assert served_adapter(console) == "hr-style@1"

    hr.get_by_label("Canary version").select_option("2")
    hr.get_by_label("Weight (%)").fill("25")
    hr.get_by_role("button", name="Set canary split").click()
    _confirm(page, [["canary", "—", "2"], ["canary_weight", "0", "25"]])
    expect(page.locator('section[data-adapter="hr-style"] td[data-field="canary_weight"]')).to_have_text("25 %")
    shot(page, "adapters")
    assert page.request.post("/console/api/adapters/hr-style/apply", data={"action": "rollback"}).status == 403  # CSRF


def test_admin_sees_documents_with_their_acl_and_sensitivity(signed_in):
    page = signed_in("root", "/console/index")
    row = page.get_by_role("row").filter(has_text=SALARY)
    expect(row.get_by_role("cell")).to_have_text(["Salary Bands 2026", "2026.1", "hr", "—", "restricted", "1", "—"])
    expect(page.locator("#flagged-h + p")).to_have_text("No indexed document carries instructions to the model.")
    public = page.get_by_role("row").filter(has_text="policies:public/company-overview.md")
    expect(public.get_by_role("cell").nth(2)).to_have_text("everyone")
    expect(page.locator('td[data-count="added"]')).to_have_text("2")
    shot(page, "index")


def test_an_auditor_finds_who_was_shown_a_document_and_its_trace(console, signed_in):
    client = openai.OpenAI(base_url=f"{console.url}/v1", api_key=console.keys["hana"], max_retries=0)
    client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "What are the salary bands for 2026?"}],
        max_tokens=8,
    )
    page = signed_in("audrey", "/console/audit")
    page.get_by_label("Document id").fill(SALARY)
    page.get_by_label("Since", exact=True).first.fill("1d")
    page.get_by_role("button", name="Find").click()
    hana = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="hana"))
    for _ in range(40):  # the trace file is written in batches: look again until hana's request is in
        if hana.count():
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(hana).to_have_count(1)
    shot(page, "audit-who-was-shown")

    csv = page.request.get(page.locator("#export-csv").get_attribute("href") or "")
    assert csv.status == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "hana" in csv.text() and csv.text().startswith("user,times")

    hana.get_by_role("link").first.click()
    steps = page.locator("table.spans tbody th")
    expect(steps.first).to_contain_text("POST /v1/chat/completions")
    assert any("retriev" in s for s in steps.all_inner_texts())
    shot(page, "audit-trace")

    page.goto("/console/audit?user=hana&since=1d")
    expect(page.locator("table.records")).to_contain_text(SALARY)


AXE = Path(__file__).with_name("node_modules") / "axe-core" / "axe.min.js"


def test_every_page_passes_axe_and_works_from_the_keyboard(console, browser):
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: npm ci --prefix tests/gateway/console (make test does)")
    context = browser.new_context(base_url=console.url, bypass_csp=True)  # axe is injected as an inline script
    page = context.new_page()
    page.goto("/console/login")
    page.keyboard.press("Tab")  # the skip link, the IdP sign-in, then the key field: sign in without a mouse
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Sign in with your company account")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(console.keys["root"])
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile("/console/adapters$"))
    found = {}
    pages = ["/console/login", "/console/adapters", "/console/index", f"/console/audit?doc={SALARY}&since=1d"]
    pages += ["/console/keys", "/console/guards?since=1d", "/console/tuning?name=benefits-qa&a=1&b=2"]
    pages += ["/console/activity?since=1h"]
    for path in pages:
        page.goto(path)
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("() => axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'best-practice']})")
        assert len(result["passes"]) > 10, path  # axe really looked at the page
        found[path] = [f"{v['id']}: {v['help']} ({len(v['nodes'])})" for v in result["violations"]]
    context.close()
    assert found == {path: [] for path in found}
