"""The web chat page in real headless Chromium (Playwright's sync API), for tests and screenshots.

Playwright never downloads a browser here: it drives the system's ``chromium``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

WAIT_MS = 15_000  # generous: the machine is shared
expect.set_options(timeout=WAIT_MS)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("the browser tests need Chromium on PATH (apt-get install chromium)")
    return path


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium, closed (with every context in it) however the block ends."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class ChatPage:
    """One person's tab, driven through the accessible names a screen reader announces."""

    context: BrowserContext
    page: Page
    problems: list[str] = field(default_factory=list)  # uncaught exceptions, CSP violations
    socket_urls: list[str] = field(default_factory=list)  # every WebSocket the page opened

    @classmethod
    def open(cls, browser: Browser, base: str, *, width: int = 1100, height: int = 760,
             bypass_csp: bool = False) -> ChatPage:
        context = browser.new_context(base_url=base, viewport={"width": width, "height": height},
                                      bypass_csp=bypass_csp)
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        chat = cls(context, page)
        page.on("pageerror", lambda exc: chat.problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: chat.problems.append(f"console: {msg.text}")
                if "Content Security Policy" in msg.text or "Trusted Type" in msg.text else None)
        page.on("websocket", lambda ws: chat.socket_urls.append(ws.url))
        return chat

    def close(self) -> None:
        self.context.close()

    # -- the page's parts, by role and label ---------------------------------------------------
    @property
    def messages(self) -> Locator:
        return self.page.get_by_role("list", name="Messages").get_by_role("listitem")

    @property
    def status(self) -> Locator:
        return self.page.get_by_role("status").first

    @property
    def alert(self) -> Locator:
        return self.page.get_by_role("alert")

    @property
    def activity(self) -> Locator:
        return self.page.get_by_role("list", name="Activity")

    def message_input(self) -> Locator:
        return self.page.get_by_label("Message", exact=True)

    # -- actions --------------------------------------------------------------------------------
    def join(self, name: str, room: str) -> None:
        self.page.goto("/")
        self.page.get_by_label("Name", exact=True).fill(name)
        self.page.get_by_label("Room", exact=True).fill(room)
        self.page.get_by_role("button", name="Join").click()
        expect(self.status).to_have_text(f"Connected as {name} in #{room}")

    def send(self, text: str) -> None:
        """Type and press Enter, as a person does."""
        box = self.message_input()
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")

    def send_many(self, texts: list[str]) -> None:
        """Submit the message form once per text, as fast as the page can."""
        self.message_input().evaluate(
            "(input, texts) => { for (const t of texts) { input.value = t;"
            " input.form.requestSubmit(); } }", texts)

    def upload(self, name: str, data: bytes, mime: str = "application/octet-stream") -> None:
        self.page.get_by_label("File", exact=True).set_input_files(
            {"name": name, "mimeType": mime, "buffer": data})
        self.page.get_by_role("button", name="Upload").click()

    # -- what the page shows --------------------------------------------------------------------
    def ids(self) -> list[str]:
        return self.messages.evaluate_all(  # type: ignore[no-any-return]
            "items => items.map(i => i.dataset.id)")

    def bodies(self) -> list[str]:
        return self.messages.evaluate_all(  # type: ignore[no-any-return]
            "items => items.map(i => i.querySelector('.body').textContent)")
