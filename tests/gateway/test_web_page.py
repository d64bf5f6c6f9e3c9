"""The web chat page end to end: real headless Chromium (Playwright) against real P, A and B.

Each test starts its own processes (under a second each) and its own browser contexts, and
closes all of them however it ends.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Route, expect

from tests.browser_support import ChatPage, chromium
from tests.gateway_support import SERVERS, System, start_gateway, start_system

pytestmark = pytest.mark.slow  # starts real processes

STATIC = Path(__file__).resolve().parents[2] / "chatsys" / "gateway" / "static"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def system(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    server = getattr(request, "param", "granian")
    marker = request.node.get_closest_marker("gateway_flags")
    flags = marker.args if marker else ()
    # A small file limit so that too_large is quick to reach from the page.
    with start_system(tmp_path, server, "--max-file-bytes=65536", *flags) as s:
        yield s


@pytest.fixture
def pages(browser: Browser, system: System) -> Iterator[list[ChatPage]]:
    opened: list[ChatPage] = []
    yield opened
    for page in opened:
        page.close()
    problems = [p for page in opened for p in page.problems]
    assert not problems, problems


def _open(pages: list[ChatPage], browser: Browser, base: str, *,
          bypass_csp: bool = False) -> ChatPage:
    page = ChatPage.open(browser, base, bypass_csp=bypass_csp)
    pages.append(page)
    return page


@pytest.mark.parametrize("system", SERVERS, indirect=True)
def test_two_people_chat_and_share_a_file(browser: Browser, system: System,
                                          pages: list[ChatPage]) -> None:
    room = "browser-chat"
    alice = _open(pages, browser, system.gateway.base)
    bob = _open(pages, browser, system.gateway.base)
    alice.join("alice", room)
    # Bob uses only the keyboard: the name field has focus, Tab moves on, Enter submits.
    bob.page.goto("/")
    expect(bob.page.get_by_label("Name", exact=True)).to_be_focused()
    bob.page.keyboard.type("bob")
    bob.page.keyboard.press("Tab")
    expect(bob.page.get_by_label("Room", exact=True)).to_be_focused()
    bob.page.keyboard.press("ControlOrMeta+a")
    bob.page.keyboard.type(room)
    bob.page.keyboard.press("Enter")
    expect(bob.status).to_have_text(f"Connected as bob in #{room}")
    expect(bob.message_input()).to_be_focused()
    expect(alice.activity).to_contain_text("bob joined")

    alice.send("hello bob")
    item = bob.messages.filter(has_text="hello bob")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("alice")
    expect(item.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    bob.send("hi alice")
    expect(alice.messages.last).to_contain_text("bob")
    expect(alice.messages.last).to_contain_text("hi alice")

    data = os.urandom(40_000)
    bob.upload("report.bin", data)
    expect(bob.page.locator("#progress-text")).to_have_text("report.bin: 100 %")
    link = alice.page.get_by_role("list", name="Messages").get_by_role("link", name="report.bin")
    expect(link).to_have_count(1)
    with alice.page.expect_download() as download:
        link.click()
    saved = download.value
    assert saved.suggested_filename == "report.bin"
    assert Path(saved.path()).read_bytes() == data

    for page in (alice, bob):
        expect(page.messages).to_have_count(3)
    assert alice.ids() == bob.ids() and len(set(alice.ids())) == 3
    assert alice.bodies()[:2] == bob.bodies()[:2] == ["hello bob", "hi alice"]
    bob.close()
    expect(alice.activity).to_contain_text("bob left")


def test_markup_in_a_message_is_only_text(browser: Browser, system: System,
                                          pages: list[ChatPage]) -> None:
    room = "browser-xss"
    mallory = _open(pages, browser, system.gateway.base)
    # Bob's browser ignores the page's CSP: the safety must be in the page's code, not only in the
    # policy (with it, an inline handler could not run anyway).
    bob = _open(pages, browser, system.gateway.base, bypass_csp=True)
    response = mallory.page.goto("/")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    mallory.join("mallory", room)
    bob.join("bob", room)
    attacks = ["<script>window.pwned = 'script'</script>",
               "<img src=x onerror=\"window.pwned = 'img'\">",
               "<b>bold?</b> &amp; <a href=\"javascript:window.pwned='a'\">link</a>"]
    for text in attacks:
        mallory.send(text)
    for page in (bob, mallory):
        expect(page.messages).to_have_count(len(attacks))
        assert page.bodies() == attacks
        messages = page.page.get_by_role("list", name="Messages")
        assert messages.locator("script, img, b, a").count() == 0
        assert page.page.evaluate("() => window.pwned") is None
    # Every module of the page is served, with the JavaScript type module scripts require.
    for module in STATIC.glob("*.js"):
        served = httpx.get(f"{system.gateway.base}/static/{module.name}")
        assert served.status_code == 200, module.name
        assert served.headers["content-type"].startswith("text/javascript"), module.name
    for hidden in ("/static/http_api.py", "/static/index.html", "/static/"):
        assert httpx.get(f"{system.gateway.base}{hidden}").status_code == 404, hidden


# No token refills during the test (the limit is on processing, docs/protocol.md): the 20
# frames beyond the burst of 40 are refused however slowly the gateway takes them up.
@pytest.mark.gateway_flags("--rate-limit=0.0001", "--rate-burst=40")
def test_every_error_is_shown_inline(browser: Browser, system: System,
                                     pages: list[ChatPage]) -> None:
    room = "browser-errors"
    page = _open(pages, browser, system.gateway.base)
    page.page.goto("/")
    page.page.get_by_label("Name", exact=True).fill("eve")
    page.page.get_by_label("Room", exact=True).fill("no spaces")
    page.page.get_by_role("button", name="Join").click()
    expect(page.alert).to_contain_text("(bad_request)")
    expect(page.page.get_by_label("Room", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.message_input()).to_be_disabled()

    page.join("eve", room)
    expect(page.alert).to_be_empty()

    # More than the burst, from a room mate's page (each connection has its own budget).
    flooder = _open(pages, browser, system.gateway.base)
    flooder.join("fay", room)
    flooder.send_many([f"burst {n}" for n in range(60)])
    expect(flooder.alert).to_contain_text("Slow down (rate_limited)")
    expect(flooder.message_input()).to_have_value(re.compile(r"^burst \d+$"))  # given back
    flooder.page.get_by_role("button", name="Dismiss error").first.click()
    expect(flooder.alert).to_be_empty()
    expect(page.messages).to_have_count(40)  # eve saw what was stored, and nothing more

    page.upload("big.bin", b"x" * 70_000)
    expect(page.alert).to_contain_text("(too_large)")
    expect(page.alert).to_contain_text("Upload of big.bin failed")

    system.b.proc.stop()  # B down: uploads answer 503 while text chat goes on
    page.upload("small.txt", b"hello", "text/plain")
    expect(page.alert).to_contain_text("(unavailable)")
    before = page.messages.count()
    page.send("still here")
    expect(page.messages).to_have_count(before + 1)


def test_a_refused_download_names_its_error(browser: Browser, system: System,
                                            pages: list[ChatPage]) -> None:
    """The gateway's own 401 and 404 answers, shown by the page: the browser's request is
    altered on its way out (a forged token, a file id that does not exist) and the real
    gateway answers it."""
    page = _open(pages, browser, system.gateway.base)
    page.join("ivy", "browser-refusals")
    page.upload("notes.txt", b"some notes", "text/plain")
    link = page.page.get_by_role("list", name="Messages").get_by_role("link", name="notes.txt")
    expect(link).to_have_count(1)

    def forged_token(route: Route) -> None:
        route.continue_(headers={**route.request.headers, "authorization": "Bearer forged"})

    page.page.route("**/api/files/*", forged_token)
    link.click()
    expect(page.alert).to_contain_text("Session expired (unauthorized)")
    expect(page.alert).to_contain_text("Cannot download notes.txt")
    page.page.unroute("**/api/files/*")

    def missing_file(route: Route) -> None:
        route.continue_(url=re.sub(r"/api/files/[^/?]+", "/api/files/f" + "0" * 31,
                                   route.request.url))

    page.page.route("**/api/files/*", missing_file)
    link.click()
    expect(page.alert).to_contain_text("Not found (not_found)")
    expect(page.alert).not_to_contain_text("unauthorized")  # the new error replaced the old
    page.page.unroute("**/api/files/*")


def test_gateway_restart_resumes_without_gaps_or_duplicates(
        browser: Browser, system: System, pages: list[ChatPage], tmp_path: Path) -> None:
    """Alice and Bob are on gateway 1, Carol on gateway 2. Gateway 1 restarts on its port;
    meanwhile Carol sends more than a welcome's history, and Alice types. Everyone ends with the
    same messages, each once, in one order."""
    room = "browser-restart"
    with start_gateway(system.a.port, system.b.port, tmp_path, "granian",
                       "--rate-burst=200") as other:
        alice = _open(pages, browser, system.gateway.base)
        bob = _open(pages, browser, system.gateway.base)
        carol = _open(pages, browser, other.base)
        for page, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            page.join(name, room)
        alice.send("before 1")
        bob.send("before 2")
        carol.send("before 3")
        for page in (alice, bob, carol):
            expect(page.messages).to_have_count(3)
        last_before = alice.ids()[-1]

        system.gateway.proc.stop()  # drains: close 1001
        expect(alice.status).to_contain_text("reconnecting", ignore_case=True)
        expect(bob.status).to_contain_text("reconnecting", ignore_case=True)
        alice.send("while down")  # queued until the page is back
        expect(alice.page.get_by_text("1 message waiting")).to_be_visible()
        gap = [f"gap {n}" for n in range(60)]  # more than the 50 of a welcome without since
        carol.send_many(gap)
        expect(carol.messages).to_have_count(3 + len(gap))

        with start_gateway(system.a.port, system.b.port, tmp_path, "granian",
                           port=system.gateway.port):
            for page, name in ((alice, "alice"), (bob, "bob")):
                expect(page.status).to_have_text(f"Connected as {name} in #{room}")
            alice.send("after 1")
            bob.send("after 2")
            carol.send("after 3")
            total = 3 + len(gap) + 1 + 3
            for page in (alice, bob, carol):
                expect(page.messages).to_have_count(total)
            ids = carol.ids()
            assert len(set(ids)) == total
            for page in (alice, bob):
                assert page.ids() == ids
                assert page.bodies() == carol.bodies()
            assert sorted(carol.bodies()) == sorted(
                ["before 1", "before 2", "before 3", *gap, "while down",
                 "after 1", "after 2", "after 3"])
            # The page resumed from the last message it had seen.
            assert any(f"since={last_before}" in url for url in alice.socket_urls[1:])


def test_network_loss_reconnects_with_since(browser: Browser, system: System,
                                            pages: list[ChatPage]) -> None:
    room = "browser-offline"
    alice = _open(pages, browser, system.gateway.base)
    bob = _open(pages, browser, system.gateway.base)
    alice.join("alice", room)
    bob.join("bob", room)
    alice.send("one")
    expect(bob.messages).to_have_count(1)
    seen = alice.ids()[-1]

    alice.context.set_offline(True)
    expect(alice.status).to_contain_text("reconnecting", ignore_case=True)
    bob.send("two")
    bob.send("three")
    alice.send("four")  # waits for the network
    expect(alice.page.get_by_text("1 message waiting")).to_be_visible()
    expect(bob.messages).to_have_count(3)
    alice.context.set_offline(False)

    expect(alice.status).to_have_text(f"Connected as alice in #{room}")
    for page in (alice, bob):
        expect(page.messages).to_have_count(4)
        assert page.bodies() == ["one", "two", "three", "four"]
    assert alice.ids() == bob.ids()
    assert any(f"since={seen}" in url for url in alice.socket_urls[1:])
