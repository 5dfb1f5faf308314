"""Real headless Chromium (Debian's package) driven by Playwright, for the page tests.

No browser is downloaded: Playwright drives the system Chromium at
``$CHROMIUM`` (default ``/usr/bin/chromium``). A missing Chromium is an error,
never a skip. Each scenario's final state is saved under ``artifacts/screenshots``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Page, expect

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
WAIT_MS = 10_000  # how long an expected change on the page may take


class User:
    """One person in their own browser context (own storage, own connection)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []  # console errors, page errors, dialogs
        # set by a test while it keeps the server away: the browser then logs each
        # failed request as a console error, which is what it should do
        self.offline = False
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not (
                self.offline and message.text.startswith("Failed to load resource: net::")):
            self.problems.append(f"console: {message.text}")

    async def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        await dialog.dismiss()

    @classmethod
    async def open(cls, browser: Browser, url: str, **params: str) -> User:
        context = await browser.new_context(viewport={"width": 1100, "height": 700})
        user = cls(await context.new_page())
        query = "&".join(f"{k}={v}" for k, v in params.items())
        await user.page.goto(f"{url}/?{query}")
        return user

    async def connected(self, transport: str | None = None) -> None:
        pattern = rf"connected \({transport}\)" if transport else r"connected \("
        await expect(self.page.locator("#status")).to_have_text(re.compile(pattern),
                                                                timeout=WAIT_MS)

    async def in_room(self, room: str) -> None:
        await expect(self.page.locator("#room-title")).to_have_text(room, timeout=WAIT_MS)

    async def say(self, text: str) -> None:
        await self.page.locator("#text-input").fill(text)
        await self.page.locator("#text-input").press("Enter")

    def messages(self) -> Any:
        return self.page.locator("#messages li[data-seq]")

    async def texts(self) -> list[str]:
        return [t for t in await self.page.locator(
            "#messages li[data-seq] .text").all_text_contents()]

    async def shows(self, *texts: str) -> None:
        """The stored messages on screen are exactly ``texts``, in order."""
        await expect(self.page.locator("#messages li[data-seq] .text")).to_have_text(
            list(texts), timeout=WAIT_MS)

    async def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
