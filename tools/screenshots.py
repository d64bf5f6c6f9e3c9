"""Screenshots of the web chat for the README, taken from a real running system.

Run from the repository root, with the ``test`` extra installed and Chromium on PATH::

    python tools/screenshots.py            # writes docs/screenshots/chat.png and error.png

It starts ``python -m chatsys all`` on a free loopback port with a throw-away data directory,
has three people chat in headless Chromium (Playwright, the system's ``chromium``; nothing is
downloaded), then photographs Alice's tab: the conversation, and an error state (an upload over
the size limit, then the system stopping while she types). Everything started is stopped at the
end, also on failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the helpers the tests use to start processes and drive the page

from playwright.sync_api import expect  # noqa: E402

from tests.browser_support import ChatPage, chromium  # noqa: E402
from tests.support import running_reported  # noqa: E402

MAX_FILE_BYTES = 1024 * 1024
REPORT = b"users,connect_mean_ms,ack_p99_ms\n2000,3.1,9.4\n5000,4.0,18.2\n"


def take(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chatsys-shots-") as tmp:
        args = ["all", "--host=127.0.0.1", "--port=0", f"--data-dir={tmp}/data",
                f"--max-file-bytes={MAX_FILE_BYTES}", "--drain-timeout=0.2"]
        with running_reported(args, log_dir=Path(tmp), timeout=60) as (system, ports), \
                chromium() as browser:
            base = f"http://127.0.0.1:{ports.port}"
            alice, bob, carol = (ChatPage.open(browser, base) for _ in range(3))
            alice.join("alice", "lobby")
            bob.join("bob", "lobby")
            alice.send("Morning! Is the load test report ready?")
            bob.send("Yes — 2,000 users, nobody failed to connect. Uploading it now.")
            bob.upload("loadtest-report.csv", REPORT, "text/csv")
            expect(alice.page.get_by_role("link", name="loadtest-report.csv")).to_be_visible()
            carol.join("Carol", "lobby")
            carol.send("ack p99 under 10 ms at 2,000 users, nice!")
            alice.send("Great, thanks both. <b>Tags</b> stay plain text, by the way.")
            expect(alice.messages).to_have_count(5)
            alice.message_input().blur()
            chat = out / "chat.png"
            alice.page.screenshot(path=str(chat), full_page=True)

            alice.upload("screen-recording.webm", b"\0" * (MAX_FILE_BYTES + 1), "video/webm")
            expect(alice.alert).to_contain_text("(too_large)")
            system.stop()
            expect(alice.status).to_contain_text("reconnecting", ignore_case=True)
            expect(alice.alert).to_contain_text("(network)")
            alice.send("Did the server just restart?")
            expect(alice.page.get_by_text("1 message waiting")).to_be_visible()
            alice.message_input().blur()
            error = out / "error.png"
            alice.page.screenshot(path=str(error), full_page=True)
    return [chat, error]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots",
                        help="directory for the PNG files (default: docs/screenshots)")
    for path in take(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
