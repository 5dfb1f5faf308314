"""The browser page end to end, in real headless Chromium against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import random
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image
from playwright.async_api import (Browser, FilePayload, Frame, Locator, async_playwright,
                                  expect)

from app.appkeys import METRICS_KEY, SIO_KEY
from app.chat.namespace import NAMESPACE
from app.core.models import RoomName, Sid

from ..browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, User
from ..conftest import TIMEOUT, ServeFactory, Served, serving, sio_client, until
from ..processes import start_server
from ..proxy import Proxy
from ..tus import tus_upload
from ..tokens import SECRET, token


# One event loop for the module's tests, so that one Chromium (and Playwright's
# driver) serves them all: each test has browser contexts of its own (own
# storage, own connections), closed at its end. Every async fixture the tests
# use is of that loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(name="serve", loop_scope="module")
async def serve_on_the_modules_loop(tmp_path: Path) -> AsyncIterator[ServeFactory]:
    # (a function of its own: marking serving itself would move every module's
    # serve to a module's loop)
    async for start in serving(tmp_path):
        yield start


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: run `make test`"
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                    args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def users(browser: Browser, request: pytest.FixtureRequest
                ) -> AsyncIterator[list[User]]:
    """Users opened in the test; at the end each is screenshotted and must have
    seen no console error, page error or dialog (a CSP violation is a console
    error); then their browser contexts are closed."""
    opened: list[User] = []
    yield opened
    try:
        for i, user in enumerate(opened):
            await user.screenshot(f"{request.node.name}-{i}")
        for user in opened:
            assert user.problems == [], user.problems
    finally:
        for user in opened:
            await user.page.context.close()


async def open_user(users: list[User], browser: Browser, url: str, **params: str) -> User:
    user = await User.open(browser, url, **params)
    users.append(user)
    return user


async def python_peer(served_url: str, serializer: str, name: str, room: str) -> object:
    sio = sio_client(serializer)
    inbox: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    sio.on("message", inbox.put_nowait, namespace=NAMESPACE)
    await sio.connect(served_url, auth={"name": name}, namespaces=[NAMESPACE],
                      wait_timeout=TIMEOUT)
    await sio.call("join", {"room": room}, namespace=NAMESPACE)
    sio.inbox = inbox
    return sio


@pytest_asyncio.fixture(loop_scope="module")
async def page_server(serve: ServeFactory, serializer: str) -> Served:
    """The server, with the page following its serializer (msgpack; both for the
    tests marked matrix: the page loads another bundle of the client for each)."""
    return await serve(serializer=serializer)


@pytest.mark.matrix("serializer")
async def test_two_people_chat(page_server: Served, browser: Browser,
                               users: list[User]) -> None:
    """Two browser users in a room see each other's messages, presence and typing."""
    alice = await open_user(users, browser, page_server.url, name="alice", room="lobby")
    await alice.in_room("lobby")
    bob = await open_user(users, browser, page_server.url, name="bob", room="lobby")
    await bob.in_room("lobby")
    await expect(alice.page.locator("#member-list li")).to_have_text(["alice", "bob"],
                                                                     timeout=WAIT_MS)
    await alice.page.locator("#text-input").press_sequentially("hel")
    await expect(bob.page.locator("#typing")).to_have_text("alice is typing…", timeout=WAIT_MS)
    await alice.page.locator("#text-input").press_sequentially("lo")
    await alice.page.locator("#text-input").press("Shift+Enter")
    await alice.page.locator("#text-input").press_sequentially("bob")
    await alice.page.locator("#text-input").press("Enter")
    await bob.shows("hello\nbob")
    await expect(bob.page.locator("#typing")).to_have_text("", timeout=WAIT_MS)
    await bob.say("hi alice")
    await alice.shows("hello\nbob", "hi alice")
    await expect(bob.page.locator("#messages li[data-seq] .from")).to_have_text(
        ["alice", "bob"])
    quick = [f"quick {i}" for i in range(5)]
    await alice.page.evaluate("""texts => {  // all submitted before the first ack is back
        const box = document.getElementById("text-input");
        for (const text of texts) { box.value = text; box.form.requestSubmit(); }
    }""", quick)
    await bob.shows("hello\nbob", "hi alice", *quick)
    await alice.shows("hello\nbob", "hi alice", *quick)
    await expect(alice.page.locator("#messages li.pending")).to_have_count(0)
    await bob.page.locator("#leave-room").click()
    await expect(alice.page.locator("#member-list li")).to_have_text(["alice"],
                                                                     timeout=WAIT_MS)


async def test_browser_and_python_client(page_server: Served, browser: Browser,
                                         users: list[User]) -> None:
    """A browser user and a Python client chat in the same room."""
    peer = await python_peer(page_server.url, page_server.settings.serializer, "py", "mixed")
    try:
        alice = await open_user(users, browser, page_server.url, name="alice", room="mixed")
        await alice.in_room("mixed")
        await alice.say("from the browser")
        got = await asyncio.wait_for(peer.inbox.get(), TIMEOUT)  # type: ignore[attr-defined]
        assert got["text"] == "from the browser" and got["from"] == "alice"
        await peer.call("send", {"room": "mixed", "text": "from python"},  # type: ignore
                        namespace=NAMESPACE)
        await alice.shows("from the browser", "from python")
    finally:
        await peer.disconnect()  # type: ignore[attr-defined]


async def test_scrolling_back_reaches_the_first_message(page_server: Served, browser: Browser,
                                                        users: list[User]) -> None:
    """Scrolling to the top loads older history until the room's first message."""
    peer = await python_peer(page_server.url, page_server.settings.serializer, "py", "long")
    try:
        for i in range(1, 131):
            await peer.call("send", {"room": "long", "text": f"message {i}"},  # type: ignore
                            namespace=NAMESPACE)
    finally:
        await peer.disconnect()  # type: ignore[attr-defined]
    alice = await open_user(users, browser, page_server.url, name="alice", room="long")
    await expect(alice.messages()).to_have_count(50, timeout=WAIT_MS)
    edge = alice.page.locator("#messages .edge")
    for _ in range(10):
        if await edge.count():
            break
        count = await alice.messages().count()
        await alice.page.locator("#messages").evaluate("list => list.scrollTop = 0")
        await expect(alice.messages()).not_to_have_count(count, timeout=WAIT_MS)
    await expect(edge).to_have_text("This is the start of the room.")
    seqs = await alice.messages().evaluate_all("items => items.map(i => +i.dataset.seq)")
    assert seqs == list(range(1, 131))


async def test_polling_and_websocket_browsers_share_a_room(
        page_server: Served, browser: Browser, users: list[User]) -> None:
    """A browser forced onto long-polling and a WebSocket one both get everything."""
    poll = await open_user(users, browser, page_server.url, name="poll", room="r",
                           transport="polling")
    await poll.connected("polling")
    ws = await open_user(users, browser, page_server.url, name="ws", room="r")
    await ws.connected("websocket")
    await poll.in_room("r")
    await ws.in_room("r")
    for i in range(3):
        await poll.say(f"p{i}")
        await poll.shows(*[t for j in range(i + 1) for t in (f"p{j}", f"w{j}")][:2 * i + 1])
        await ws.say(f"w{i}")
        await poll.shows(*[t for j in range(i + 1) for t in (f"p{j}", f"w{j}")])
    await ws.shows("p0", "w0", "p1", "w1", "p2", "w2")
    await expect(poll.page.locator("#status")).to_have_text("connected (polling)")


async def test_user_text_is_shown_as_text(page_server: Served, browser: Browser,
                                          users: list[User]) -> None:
    """Names and messages that look like HTML appear literally and run nothing;
    the page is sent with a Content-Security-Policy that forbids inline script."""
    evil = "<img src=x onerror=alert(1)>"
    mallory = await open_user(users, browser, page_server.url, name=evil, room="xss")
    await mallory.in_room("xss")
    victim = await open_user(users, browser, page_server.url, name="victim", room="xss")
    await victim.in_room("xss")
    await mallory.say(evil)
    await mallory.say("<script>alert(2)</script>")
    await victim.shows(evil, "<script>alert(2)</script>")
    await expect(victim.page.locator("#messages li[data-seq] .from").first).to_have_text(evil)
    await expect(victim.page.locator("#member-list li")).to_have_text(sorted([evil, "victim"]))
    assert await victim.page.locator("#messages img, #member-list img").count() == 0
    async with aiohttp.ClientSession() as http:
        async with http.get(page_server.url + "/") as response:
            policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


async def test_errors_are_shown_in_plain_words(serve: ServeFactory, browser: Browser,
                                               users: list[User]) -> None:
    """Text over the limit is refused in plain words, by the page itself and, for a page
    that believes in a larger limit, by the server; the refused message is marked."""
    served = await serve(max_text_length=10)
    alice = await open_user(users, browser, served.url, name="alice", room="r")
    await alice.in_room("r")
    await alice.say("x" * 11)
    await expect(alice.page.locator("#alert")).to_have_text(
        "That message is too long (at most 10 characters).", timeout=WAIT_MS)
    await alice.page.evaluate("document.body.dataset.maxText = '1000'")
    await alice.say("y" * 11)  # now only the server can refuse it
    await expect(alice.page.locator("#alert")).to_have_text("That message is too long.",
                                                            timeout=WAIT_MS)
    await expect(alice.page.locator("#messages li.failed .text")).to_have_text("y" * 11)
    await alice.say("short")
    await alice.shows("short")


@pytest_asyncio.fixture(loop_scope="module")
async def restartable(tmp_path: Path) -> AsyncIterator[dict[str, object]]:
    """A `python -m app` process behind a proxy whose URL survives restarts."""
    server, port = await start_server(tmp_path)
    proxy = await Proxy(port).start()
    state: dict[str, object] = {"server": server, "port": port, "proxy": proxy}
    yield state
    await proxy.close()
    assert await state["server"].stop() == 0  # type: ignore[attr-defined]


async def test_reconnect_after_restart_shows_what_was_missed(
        tmp_path: Path, restartable: dict[str, object], browser: Browser,
        users: list[User]) -> None:
    """After the server restarts, the page reconnects by itself and shows what a
    Python client sent meanwhile, once each and in order; a message typed while
    offline is delivered once."""
    proxy: Proxy = restartable["proxy"]  # type: ignore[assignment]
    alice = await open_user(users, browser, proxy.url, name="alice", room="r")
    await alice.in_room("r")
    await alice.say("before")
    await alice.shows("before")

    proxy.offline = alice.offline = True  # keep the page away until we let it back
    assert await restartable["server"].stop() == 0  # type: ignore[attr-defined]
    await expect(alice.page.locator("#status")).to_have_attribute(
        "data-state", "reconnecting", timeout=WAIT_MS)
    await alice.say("typed while offline")
    await expect(alice.page.locator("#messages li.pending .text")).to_have_text(
        "typed while offline")

    server, port = await start_server(tmp_path)
    restartable.update(server=server, port=port)
    proxy.upstream = port
    peer = await python_peer(f"http://127.0.0.1:{port}", "msgpack", "py", "r")
    try:
        for text in ("missed 1", "missed 2", "missed 3"):
            await peer.call("send", {"room": "r", "text": text},  # type: ignore
                            namespace=NAMESPACE)
        proxy.offline = False
        await alice.connected()
        alice.offline = False
        await alice.shows("before", "missed 1", "missed 2", "missed 3", "typed while offline")
        await expect(alice.page.locator("#messages li.pending")).to_have_count(0)
        got = await asyncio.wait_for(peer.inbox.get(), TIMEOUT)  # type: ignore
        assert got["text"] == "typed while offline"
        history = await peer.call("history", {"room": "r"}, namespace=NAMESPACE)  # type: ignore
        assert [m["text"] for m in history["messages"]] == [
            "before", "missed 1", "missed 2", "missed 3", "typed while offline"]
    finally:
        await peer.disconnect()  # type: ignore[attr-defined]


async def test_name_rooms_unread_and_phone_layout(page_server: Served, browser: Browser,
                                                  users: list[User]) -> None:
    """The page asks for a name and remembers it; lists open rooms with member counts;
    switches rooms by keyboard; counts unread messages of rooms not in view; and fits
    a phone-sized screen."""
    context = await browser.new_context(viewport={"width": 390, "height": 800})
    alice = User(await context.new_page())
    users.append(alice)
    await alice.page.goto(page_server.url + "/")
    await alice.page.get_by_label("Display name").fill("alice")
    await alice.page.get_by_label("Display name").press("Enter")
    await alice.connected()
    await alice.page.reload()  # remembered: no question the second time
    await alice.connected()
    await expect(alice.page.locator("#whoami")).to_have_text("You are alice")

    bob = await open_user(users, browser, page_server.url, name="bob", room="news")
    await bob.in_room("news")
    rooms = alice.page.get_by_role("button", name="Rooms", exact=True)  # the phone's drawer
    await expect(rooms).to_have_attribute("aria-expanded", "true")  # (no room yet: open)
    await alice.page.locator("#refresh-rooms").click()
    await expect(alice.page.locator("#open-rooms li")).to_have_text(["news1"],
                                                                    timeout=WAIT_MS)
    for room in ("news", "chat"):
        if await rooms.get_attribute("aria-expanded") == "false":
            await rooms.click()
        await alice.page.get_by_label("Join or create a room").fill(room)
        await alice.page.get_by_label("Join or create a room").press("Enter")
        await alice.in_room(room)
        await expect(rooms).to_have_attribute("aria-expanded", "false")  # the room, whole
    await rooms.click()
    await alice.page.locator("#refresh-rooms").click()
    # each room once: hers with how many are in them, none left among the others
    await expect(alice.page.locator("#joined-rooms li")).to_have_text(["news2", "chat1"],
                                                                      timeout=WAIT_MS)
    await expect(alice.page.locator("#open-rooms li")).to_have_count(0)
    await bob.say("while you look elsewhere")
    unread = alice.page.locator("#joined-rooms button", has_text="news").locator(".badge")
    await expect(unread).to_have_text("1", timeout=WAIT_MS)
    news = alice.page.locator("#joined-rooms button", has_text="news")
    await news.focus()
    await news.press("Enter")
    await alice.in_room("news")
    await alice.shows("while you look elsewhere")
    await expect(unread).to_have_count(0)
    await expect(alice.page.locator("#text-input")).to_be_in_viewport()


async def test_page_fills_a_gap_from_history(page_server: Served, browser: Browser,
                                             users: list[User]) -> None:
    """A message whose seq skips ahead (its predecessors' broadcasts were lost, as
    during a Redis outage) makes the page fetch the missing ones first."""
    alice = await open_user(users, browser, page_server.url, name="alice", room="gap")
    await alice.in_room("gap")
    await alice.say("first")
    await alice.shows("first")
    for text in ("lost 1", "lost 2"):  # stored, never broadcast
        await page_server.chat.store.append(RoomName("gap"), "bob", text, None)
    peer = await python_peer(page_server.url, page_server.settings.serializer, "bob", "gap")
    try:
        await peer.call("send", {"room": "gap", "text": "seen"},  # type: ignore
                        namespace=NAMESPACE)
        await alice.shows("first", "lost 1", "lost 2", "seen")
    finally:
        await peer.disconnect()  # type: ignore[attr-defined]


async def test_page_catches_up_when_told(page_server: Served, browser: Browser,
                                         users: list[User]) -> None:
    """Told to catch up (``catch_up``: what a node sends its clients when its link
    to the other nodes may have lost events), the page fetches what it has not
    shown, with no later message to reveal the gap, and redraws who is here."""
    alice = await open_user(users, browser, page_server.url, name="alice", room="cu")
    await alice.in_room("cu")
    await alice.say("first")
    await alice.shows("first")
    chat = page_server.chat
    for text in ("lost 1", "lost 2"):  # stored, never broadcast
        await chat.store.append(RoomName("cu"), "bob", text, None)
    await chat.presence.join(RoomName("cu"), "bob", Sid("on-another-node"))
    chat.recovery.catch_up(["cu"])
    await alice.shows("first", "lost 1", "lost 2")
    await expect(alice.page.locator("#member-list li")).to_have_text(["alice", "bob"])


async def test_page_shows_edits_deletes_reactions_and_replies(
        page_server: Served, browser: Browser, users: list[User]) -> None:
    """Changes made by a Python client reach the page live, and changes it missed
    (stored, never broadcast) arrive when it is told to catch up: edited text
    marked (edited), a deleted message as a tombstone, reactions with counts,
    a reply with the line it answers."""
    peer = await python_peer(page_server.url, page_server.settings.serializer, "py", "ch")
    try:
        alice = await open_user(users, browser, page_server.url, name="alice", room="ch")
        await alice.in_room("ch")
        call = peer.call  # type: ignore[attr-defined]
        first = (await call("send", {"room": "ch", "text": "helo"}, namespace=NAMESPACE))
        await alice.shows("helo")
        for event, data in (("edit", {"text": "hello"}), ("react", {"emoji": "👍"})):
            ack = await call(event, {"room": "ch", "seq": first["message"]["seq"], **data},
                             namespace=NAMESPACE)
            assert ack["ok"], ack
        doomed = await call("send", {"room": "ch", "text": "doomed"}, namespace=NAMESPACE)
        await alice.shows("hello", "doomed")
        items = alice.messages()
        await expect(items.nth(0).locator(".edited")).to_have_text("(edited)")
        await expect(items.nth(0).locator(".reaction")).to_have_text(["👍 1"])
        chat = page_server.chat
        room = RoomName("ch")
        await chat.store.alter(room, "py", "delete", doomed["message"]["seq"], None,
                               None)  # missed by the page
        await chat.store.alter(room, "bob", "react", 1, "👍", None)
        await chat.store.append(room, "bob", "quite so", None, reply_to=1)
        chat.recovery.catch_up(["ch"])
        await alice.shows("hello", "message deleted", "quite so")
        await expect(items.nth(0).locator(".reaction")).to_have_text(["👍 2"])
        await expect(items.nth(0).locator(".reaction")).to_have_attribute("title", "py, bob")
        await expect(items.nth(1)).to_have_class(re.compile("deleted"))
        await expect(items.nth(2).locator(".reply")).to_have_text("↪ py: hello")
    finally:
        await peer.disconnect()  # type: ignore[attr-defined]


async def tab_to(user: User, control: Locator, backwards: bool = False) -> None:
    """Press Tab (or Shift+Tab) until ``control`` has the focus: fails if 30
    presses do not reach it."""
    for _ in range(30):
        await user.page.keyboard.press("Shift+Tab" if backwards else "Tab")
        if await control.evaluate("(element) => element === document.activeElement"):
            return
    raise AssertionError(f"Tab does not reach {control}")


async def act(user: User, index: int, action: str, **attrs: str) -> None:
    """Hover the ``index``-th stored message (which shows its actions) and click one."""
    item = user.messages().nth(index)
    await item.hover()
    selector = f"[data-action={action}]" + "".join(f'[data-{k}="{v}"]' for k, v in attrs.items())
    await item.locator(selector).click()


@pytest.mark.matrix("serializer")
@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_people_edit_react_reply_delete_and_search_on_the_page(
        page_server: Served, browser: Browser, users: list[User], transport: str,
        request: pytest.FixtureRequest) -> None:
    """Everything a person does to messages, through the page's own controls:
    alice edits her message, bob reacts from the picker and alice toggles a
    reaction by its chip, bob replies, alice deletes (two clicks), and a search
    lists the match with the word marked and jumps to it. Both pages show
    each state; each is screenshotted."""
    params = {"room": "ui", **({"transport": "polling"} if transport == "polling" else {})}
    alice = await open_user(users, browser, page_server.url, name="alice", **params)
    bob = await open_user(users, browser, page_server.url, name="bob", **params)
    for user in (alice, bob):
        await user.in_room("ui")
        await user.connected(transport)
    shot = request.node.name
    await alice.say("helo wrld")
    await bob.shows("helo wrld")
    await expect(bob.messages().nth(0).locator("[data-action=edit]")).to_have_count(0)

    await act(alice, 0, "edit")
    box = alice.messages().nth(0).locator(".edit-text")
    await box.fill("hello world")
    await box.press("Enter")
    for user in (alice, bob):
        await user.shows("hello world")
        await expect(user.messages().nth(0).locator(".edited")).to_have_text("(edited)")
    await bob.screenshot(f"{shot}-edited")

    await act(bob, 0, "react")
    await act(bob, 0, "pick", emoji="🎉")
    for user in (alice, bob):
        await expect(user.messages().nth(0).locator(".reaction")).to_have_text(["🎉 1"])
    chip = alice.messages().nth(0).locator(".reaction")
    await chip.click()  # adds alice's
    await expect(bob.messages().nth(0).locator(".reaction")).to_have_text(["🎉 2"])
    await expect(chip).to_have_attribute("aria-pressed", "true")
    await chip.click()  # and takes it back
    await expect(bob.messages().nth(0).locator(".reaction")).to_have_text(["🎉 1"])
    await bob.screenshot(f"{shot}-reacted")

    await act(bob, 0, "reply")
    await expect(bob.page.locator("#reply-text")).to_have_text("Replying to alice: hello world")
    await bob.say("agreed")
    for user in (alice, bob):
        await user.shows("hello world", "agreed")
        await expect(user.messages().nth(1).locator(".reply")).to_have_text(
            "↪ alice: hello world")
    await expect(bob.page.locator("#reply-bar")).to_be_hidden()
    await alice.screenshot(f"{shot}-replied")

    await act(alice, 0, "delete")
    delete = alice.messages().nth(0).locator("[data-action=delete]")
    await expect(delete).to_have_text("Delete?")
    await alice.screenshot(f"{shot}-confirming")
    await act(alice, 0, "delete")
    for user in (alice, bob):
        await user.shows("message deleted", "agreed")
        await expect(user.messages().nth(1).locator(".reply")).to_have_text(
            "↪ a deleted message")
        await expect(user.messages().nth(0).locator(".reaction")).to_have_count(0)
    await bob.screenshot(f"{shot}-deleted")

    await alice.page.locator("#search-input").fill("AGRE")
    await alice.page.locator("#search-input").press("Enter")
    results = alice.page.locator("#search-results .result")
    await expect(results).to_have_count(1)
    await expect(results.locator("mark")).to_have_text(["agreed"])
    await alice.screenshot(f"{shot}-searched")
    await results.first.click()
    await expect(alice.messages().nth(1)).to_have_class(re.compile("flash"))


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_any_emoji_is_found_in_the_picker_and_its_spellings_are_one_reaction(
        page_server: Served, browser: Browser, users: list[User], scheme: str) -> None:
    """bob opens the full picker from a message's reactions ("More…"): the
    cursor is in its search, which finds an otter among all of Unicode's
    emoji; his reaction reaches alice. A Python client's ❤ (U+2764 alone) and
    bob's ❤️ from the message's own offer make one chip "❤️ 2". Escape closes
    the picker and gives the focus back. The picker's frame and the page with
    it open meet WCAG AA as axe checks them, and nothing breaks the page's
    Content-Security-Policy (the fixture: no console error in any frame)."""
    room = f"emoji-{scheme}"
    context = await browser.new_context(viewport={"width": 1100, "height": 700},
                                        color_scheme=scheme)  # type: ignore[arg-type]
    bob = User(await context.new_page())
    users.append(bob)
    await bob.page.goto(f"{page_server.url}/?name=bob{scheme}&room={room}")
    alice = await open_user(users, browser, page_server.url, name=f"alice{scheme}", room=room)
    for user in (alice, bob):
        await user.in_room(room)
    await alice.say("pick one")
    await bob.shows("pick one")

    await act(bob, 0, "react")
    await act(bob, 0, "more-emoji")
    dialog = bob.page.get_by_role("dialog", name="Choose an emoji")
    await expect(dialog).to_be_visible()
    search = bob.page.frame_locator(".emoji-dialog iframe").locator("input#search")
    await expect(search).to_be_focused(timeout=WAIT_MS)
    frame = next(f for f in bob.page.frames if f.url.endswith("/emoji-picker"))
    assert await violations(bob) == [], f"the page with the picker open, {scheme}"
    assert await violations(bob, frame) == [], f"the picker, {scheme}"
    await bob.screenshot(f"emoji-picker-{scheme}")
    await search.fill("otter")
    otter = bob.page.frame_locator(".emoji-dialog iframe").get_by_role("option",
                                                                       name=re.compile("otter"))
    await otter.first.click()
    await expect(dialog).to_be_hidden()
    for user in (alice, bob):
        await expect(user.messages().nth(0).locator(".reaction")).to_have_text(["\U0001f9a6 1"])

    peer = await python_peer(page_server.url, page_server.settings.serializer, "carol", room)
    await peer.call(  # type: ignore[attr-defined]
        "react", {"room": room, "seq": 1, "emoji": "\u2764"}, namespace=NAMESPACE)
    await act(bob, 0, "react")
    await act(bob, 0, "pick", emoji="\u2764\ufe0f")
    for user in (alice, bob):
        await expect(user.messages().nth(0).locator(".reaction")).to_have_text(
            ["\U0001f9a6 1", "\u2764\ufe0f 2"])
    await peer.disconnect()  # type: ignore[attr-defined]

    # by keyboard alone: the message's actions are reached with Tab
    await bob.page.locator("#text-input").focus()
    react = bob.messages().nth(0).locator("[data-action=react]")
    await tab_to(bob, react, backwards=True)
    await bob.page.keyboard.press("Enter")
    await expect(react).to_be_focused()  # (the message drawn again with its picker)
    await tab_to(bob, bob.messages().nth(0).locator("[data-action=more-emoji]"))
    await bob.page.keyboard.press("Enter")
    await expect(search).to_be_focused(timeout=WAIT_MS)
    await bob.page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(bob.messages().nth(0).locator("[data-action=react]")).to_be_focused()


async def test_a_server_recording_joins_is_the_same_chat_on_the_page(
        serve: ServeFactory, browser: Browser, users: list[User]) -> None:
    """With --record-joins each first entry is an entry of the room's stream
    (a change without a message): the page takes them in order and shows the
    messages around them as ever, with nothing unread that is not a message."""
    served = await serve(record_joins=True)
    alice = await open_user(users, browser, served.url, name="alice", room="j")
    await alice.in_room("j")
    await alice.say("before bob")
    bob = await open_user(users, browser, served.url, name="bob", room="j")
    await bob.in_room("j")
    await bob.say("bob here")
    await alice.say("after bob")
    for user in (alice, bob):
        await user.shows("before bob", "bob here", "after bob")
    carol = sio_client("msgpack")
    await carol.connect(served.url, auth={"name": "carol"}, namespaces=[NAMESPACE],
                        wait_timeout=TIMEOUT)
    try:
        joined = await carol.call("join", {"room": "j"}, namespace=NAMESPACE)
        assert joined["seq"] == 6 and joined["unread"] == 0  # 3 messages, 3 first entries
        await carol.call("send", {"room": "j", "text": "carol too"}, namespace=NAMESPACE)
    finally:
        await carol.disconnect()
    for user in (alice, bob):
        await user.shows("before bob", "bob here", "after bob", "carol too")


async def test_a_reply_jumps_to_an_original_not_loaded_yet(
        page_server: Served, browser: Browser, users: list[User]) -> None:
    """The page loads the latest 50 messages; a reply to message 1 of 120 shows
    "message 1" until clicked, then older pages load until the original is
    there, and it is scrolled into view and marked."""
    chat = page_server.chat
    room = RoomName("far")
    for i in range(120):
        await chat.store.append(room, "py", f"old {i + 1}", None)
    await chat.store.append(room, "py", "about the first one", None, reply_to=1)
    alice = await open_user(users, browser, page_server.url, name="alice", room="far")
    await alice.in_room("far")
    reply = alice.messages().last.locator(".reply")
    await expect(reply).to_have_text("↪ message 1")
    await reply.click()
    first = alice.page.locator('#messages li[data-seq="1"]')
    await expect(first).to_have_class(re.compile("flash"))
    await expect(first).to_be_in_viewport()
    await expect(alice.page.locator("#messages .edge")).to_have_count(1)


async def test_page_in_token_mode(serve: ServeFactory, browser: Browser,
                                  users: list[User]) -> None:
    """With a JWT secret, the page connects with the token from its link (then drops it
    from the address bar) and shows the token's name."""
    served = await serve(jwt_secret=SECRET)
    alice = await open_user(users, browser, served.url, token=token(name="alice"), room="t")
    await alice.in_room("t")
    await expect(alice.page.locator("#whoami")).to_have_text("You are alice")
    assert "token=" not in alice.page.url
    await alice.say("signed in")
    await alice.shows("signed in")
    await expect(alice.page.locator("#messages li[data-seq] .from")).to_have_text(["alice"])


async def alice_in_r(users: list[User], browser: Browser, url: str, transport: str) -> User:
    """alice's page, in room r and connected, on ``transport``."""
    params = {"name": "alice", "room": "r"}
    if transport == "polling":
        params["transport"] = "polling"
    alice = await open_user(users, browser, url, **params)
    await alice.in_room("r")
    await alice.connected()
    return alice


@pytest_asyncio.fixture(loop_scope="module")
async def page_proxy(page_server: Served) -> AsyncIterator[Proxy]:
    """A proxy to page_server (ask for it before ``users``: it must outlive the pages)."""
    proxy = await Proxy(int(page_server.url.rsplit(":", 1)[1])).start()
    yield proxy
    await proxy.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_page_catches_up_on_long_messages(page_server: Served, browser: Browser,
                                                page_proxy: Proxy, users: list[User],
                                                transport: str) -> None:
    """A page that missed 500 messages of 4,000 four-byte characters (8 MB as msgpack,
    24 MB as JSON) catches up after the reconnect, page by page of max_reply_bytes:
    every message once, in order."""
    proxy = page_proxy
    peer = await python_peer(page_server.url, page_server.settings.serializer, "py", "r")
    try:
        alice = await alice_in_r(users, browser, proxy.url, transport)
        proxy.offline = alice.offline = True
        proxy.cut()
        await expect(alice.page.locator("#status")).to_have_attribute(
            "data-state", "reconnecting", timeout=WAIT_MS)
        missed = [f"{i:03} " + "\N{PARTY POPPER}" * 3996 for i in range(500)]
        for start in range(0, 500, 20):  # pipelined in rounds, each POST under maxPayload
            await asyncio.gather(*(
                peer.call("send", {"room": "r", "text": text},  # type: ignore[attr-defined]
                          namespace=NAMESPACE, timeout=TIMEOUT)
                for text in missed[start:start + 20]))
        proxy.offline = False
        await alice.connected()
        await expect(alice.messages()).to_have_count(500, timeout=3 * WAIT_MS)
        alice.offline = False  # requests refused while offline may be reported until now
        seqs = await alice.messages().evaluate_all("items => items.map(i => +i.dataset.seq)")
        assert seqs == list(range(1, 501))
        assert await alice.texts() == missed
    finally:
        await peer.disconnect()  # type: ignore[attr-defined]


@pytest_asyncio.fixture(loop_scope="module")
async def slow_link(serve: ServeFactory) -> AsyncIterator[tuple[Served, Proxy]]:
    """A server with small backlog bounds and a ping every second, and a proxy
    to it whose rate the test sets (ask for it before ``users``)."""
    served = await serve(serializer="msgpack", max_backlog_bytes=64_000,
                         max_reply_bytes=32_000, socket_send_buffer=16384,
                         # a ping every second; the pong's deadline not so near
                         # that a loaded machine's stall cuts the page (CI, once)
                         ping_interval=1.0, ping_timeout=6.0)
    proxy = await Proxy(int(served.url.rsplit(":", 1)[1]), rate=0).start()
    yield served, proxy
    await proxy.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_page_on_a_slow_link_is_caught_up_not_cut(
        slow_link: tuple[Served, Proxy], browser: Browser, users: list[User],
        transport: str) -> None:
    """A page whose link (a proxy at 40 KB/s) is ten times slower than its room
    (200 messages of a kilobyte sent at once, and reactions): the server skips
    live events for it and tells it to catch up, rather than cut it; it shows
    every message once, in order, with its reactions, on the same connection."""
    served, proxy = slow_link
    peer = await python_peer(served.url, "msgpack", "py", "r")
    try:
        alice = await alice_in_r(users, browser, proxy.url, transport)
        sids = {sid for sid, conn in served.chat.connections.items() if conn.name == "alice"}
        proxy.rate = 40_000  # the page has loaded: from now on its link is slow
        texts = [f"{i:03} " + "x" * 996 for i in range(200)]
        call = peer.call  # type: ignore[attr-defined]
        acks = [await call("send", {"room": "r", "text": text}, namespace=NAMESPACE,
                           timeout=TIMEOUT) for text in texts]
        for ack in acks[:20]:
            await call("react", {"room": "r", "seq": ack["message"]["seq"], "emoji": "👍"},
                       namespace=NAMESPACE, timeout=TIMEOUT)
        assert served.app[SIO_KEY].eio.skips >= 1  # it fell behind
        await expect(alice.messages()).to_have_count(200, timeout=4 * WAIT_MS)
        assert await alice.texts() == texts
        await expect(alice.page.locator("#messages li[data-seq] .reactions")).to_have_count(
            20, timeout=4 * WAIT_MS)
        ended = {sample.labels["reason"]: sample.value
                 for metric in served.app[METRICS_KEY].disconnects.collect()
                 for sample in metric.samples if sample.name.endswith("_total")}
        assert {sid for sid, conn in served.chat.connections.items()
                if conn.name == "alice"} == sids, ended  # never cut: the same connection
        proxy.rate = 0
    finally:
        await peer.disconnect()  # type: ignore[attr-defined]


async def test_a_large_room_lists_its_people_a_page_at_a_time(
        serve: ServeFactory, browser: Browser, users: list[User]) -> None:
    """In a room larger than --presence-list-max (3 here) the page shows the
    count and a first page of names, "Show more people" pages the rest, and
    arrivals and departures (told once a tick) keep both right."""
    served = await serve(serializer="msgpack", presence_list_max=3, presence_tick=0.05)
    peers = [await python_peer(served.url, "msgpack", f"p{i}", "big") for i in range(4)]
    try:
        alice = await open_user(users, browser, served.url, name="alice", room="big")
        await alice.in_room("big")
        count = alice.page.locator("#people-count")
        people = alice.page.locator("#member-list li:not(.more)")
        await expect(count).to_have_text("(5)", timeout=WAIT_MS)
        await expect(people).to_have_count(3)
        await alice.page.get_by_role("button", name="Show more people (3 of 5)").click()
        await expect(people).to_have_text(["alice", "p0", "p1", "p2", "p3"], timeout=WAIT_MS)
        await expect(alice.page.locator("#member-list li.more")).to_have_count(0)
        peers.append(await python_peer(served.url, "msgpack", "p4", "big"))
        await expect(count).to_have_text("(6)", timeout=WAIT_MS)
        await expect(people).to_have_text(["alice", "p0", "p1", "p2", "p3", "p4"])
        await peers[0].disconnect()  # type: ignore[attr-defined]
        await expect(count).to_have_text("(5)", timeout=WAIT_MS)
        await expect(people).to_have_text(["alice", "p1", "p2", "p3", "p4"])
    finally:
        for peer in peers:
            await peer.disconnect()  # type: ignore[attr-defined]


async def test_page_renews_its_token_from_the_token_url(serve: ServeFactory, browser: Browser,
                                                        users: list[User]) -> None:
    """In token mode with --token-url, the page fetches a fresh token before its own
    expires and renews its connection with it: it outlives its first token on the same
    connection, while a client on a token of the same age is ended."""
    from ..wire.test_token_expiry import LIFETIME, Holder
    issued: list[str] = []

    async def sign_in(request: web.Request) -> web.Response:
        issued.append(token(name="alice", exp=int(time.time()) + LIFETIME + 1))
        return web.json_response({"token": issued[-1]})

    served = await serve(jwt_secret=SECRET, token_url="/test-sign-in/token",
                         routes=lambda app: app.router.add_get("/test-sign-in/token", sign_in))
    exp = int(time.time()) + LIFETIME + 1
    clock = await Holder.connect(served, "websocket", token(name="clock", exp=exp))
    try:
        alice = await open_user(users, browser, served.url, room="t",
                                token=token(name="alice", exp=exp))
        await alice.in_room("t")
        before = [sid for sid, c in served.chat.connections.items() if c.name == "alice"]
        await clock.wait_ended()
        await until(lambda: len(issued) >= 2, timeout=3 * (LIFETIME + 1) + TIMEOUT)
        after = [sid for sid, c in served.chat.connections.items() if c.name == "alice"]
        assert after == before and len(before) == 1  # renewed, never reconnected
        await alice.say("on a renewed token")
        await alice.shows("on a renewed token")
    finally:
        await clock.sio.disconnect()


async def test_an_ended_token_asks_for_a_new_one_and_the_session_goes_on(
        serve: ServeFactory, browser: Browser, users: list[User]) -> None:
    """Token mode without --token-url: when alice's token expires, the page
    says so, links to --sign-in-url and asks for a new token, holding her
    rooms; a new token pasted for alice carries on in the same page (no
    reload) with what was said meanwhile. The card meets WCAG AA."""
    from ..wire.test_token_expiry import LIFETIME
    served = await serve(jwt_secret=SECRET, sign_in_url="/test-sign-in")
    alice = await open_user(users, browser, served.url, room="t",
                            token=token(name="alice", exp=int(time.time()) + LIFETIME + 1))
    await alice.in_room("t")
    await alice.say("before")
    await alice.shows("before")
    await alice.page.evaluate("window.samePage = true")
    note = alice.page.locator("#login-note")
    await expect(note).to_contain_text("expired", timeout=(LIFETIME + 2) * 1000 + WAIT_MS)
    await expect(alice.page.locator("#chat")).to_be_hidden()
    await expect(alice.page.get_by_role("link", name="Sign in")).to_have_attribute(
        "href", "/test-sign-in")
    assert await violations(alice) == [], "the card of an ended token"
    await alice.screenshot("token-ended")

    bob = sio_client("msgpack")
    await bob.connect(served.url, auth={"token": token(name="bob")}, namespaces=[NAMESPACE],
                      wait_timeout=TIMEOUT)
    try:
        await bob.call("join", {"room": "t"}, namespace=NAMESPACE)
        await bob.call("send", {"room": "t", "text": "while alice was away"},
                       namespace=NAMESPACE)
    finally:
        await bob.disconnect()
    await alice.page.get_by_label("Or paste an access token").fill(token(name="alice"))
    await alice.page.get_by_label("Or paste an access token").press("Enter")
    await alice.in_room("t")
    await alice.shows("before", "while alice was away")
    await expect(note).to_be_hidden()
    assert await alice.page.evaluate("window.samePage") is True


async def test_the_token_url_signs_the_page_in_and_a_refusal_then_asks(
        serve: ServeFactory, browser: Browser, users: list[User]) -> None:
    """With --token-url, a page opened without a token gets one from it and
    connects with no card; when the URL stops giving tokens (signed out of
    the operator's service) and the token expires, the card asks for one."""
    from ..wire.test_token_expiry import LIFETIME
    signed_in = True

    async def sign_in(request: web.Request) -> web.Response:
        if not signed_in:
            return web.json_response({"error": "not signed in"}, status=401)
        return web.json_response(
            {"token": token(name="alice", exp=int(time.time()) + LIFETIME + 1)})

    served = await serve(jwt_secret=SECRET, token_url="/test-sign-in/token",
                         routes=lambda app: app.router.add_get("/test-sign-in/token", sign_in))
    alice = User(await (await browser.new_context()).new_page())
    users.append(alice)
    await alice.page.goto(f"{served.url}/?room=t")
    await alice.in_room("t")
    await expect(alice.page.locator("#whoami")).to_have_text("You are alice")
    signed_in = False
    await expect(alice.page.locator("#login-note")).to_contain_text(
        "expired", timeout=(LIFETIME + 2) * 1000 + WAIT_MS)
    await expect(alice.page.get_by_label("Access token")).to_be_focused()
    # the browser logs the URL's refusals (401) as errors, as it should; nothing else
    alice.problems = [p for p in alice.problems if "status of 401" not in p]


async def test_what_is_new_on_the_page(serve: ServeFactory, browser: Browser,
                                       users: list[User]) -> None:
    """A mention while looking elsewhere is a badge on both of a person's devices;
    opening the room on one shows it highlighted, marks it read and clears the
    badge on the other; the sender sees "Seen by"; a member's name opens a direct
    conversation, listed apart from rooms. Each state is screenshotted."""
    served = await serve(jwt_secret=SECRET)
    shot = "what-is-new"
    laptop = await open_user(users, browser, served.url, token=token(name="alice"), room="team")
    await laptop.in_room("team")
    await laptop.page.get_by_label("Join or create a room").fill("lobby")
    await laptop.page.get_by_label("Join or create a room").press("Enter")
    await laptop.in_room("lobby")
    phone = await open_user(users, browser, served.url, token=token(name="alice"), room="lobby")
    await phone.in_room("lobby")
    bob = await open_user(users, browser, served.url, token=token(name="bob"), room="team")
    await bob.in_room("team")
    await bob.say("@alice can you look at this?")
    await bob.shows("@alice can you look at this?")

    def team(user: User) -> Any:
        return user.page.locator("#joined-rooms button", has_text="team")
    for device in (laptop, phone):  # the phone never opened team: the server lists it
        await expect(team(device).locator(".badge.mention")).to_have_text("@1", timeout=WAIT_MS)
        await expect(team(device).locator(".badge:not(.mention)")).to_have_text("1")
    await laptop.screenshot(f"{shot}-badges")

    await team(laptop).click()
    await laptop.in_room("team")
    await expect(laptop.page.locator("#messages li.mention .text")).to_have_text(
        ["@alice can you look at this?"], timeout=WAIT_MS)
    for device in (laptop, phone):  # read on the laptop: cleared on the phone too
        await expect(team(device).locator(".badge")).to_have_count(0, timeout=WAIT_MS)
    await expect(bob.page.locator("#messages .seen")).to_have_text(["Seen by alice"],
                                                                   timeout=WAIT_MS)
    await laptop.screenshot(f"{shot}-read")
    await bob.screenshot(f"{shot}-seen")

    await laptop.page.locator("#member-list button", has_text="bob").click()
    await laptop.in_room("bob")
    await laptop.say("just between us")
    await laptop.shows("just between us")
    direct = bob.page.locator("#direct-rooms button", has_text="alice")
    await expect(direct.locator(".badge.mention")).to_have_text("@1", timeout=WAIT_MS)
    await expect(bob.page.locator("#joined-rooms button", has_text="alice")).to_have_count(0)
    await bob.screenshot(f"{shot}-direct-listed")
    await direct.click()
    await bob.in_room("alice")
    await bob.shows("just between us")
    await expect(direct.locator(".badge")).to_have_count(0, timeout=WAIT_MS)
    await bob.screenshot(f"{shot}-direct")


# Headless Chromium neither shows notifications nor hides a tab: the page's side
# of both is what is tested, with the Notification API recorded and the tab's
# visibility set by the test.
NOTIFICATIONS_RECORDED = """
window.__shown = []; window.__asked = 0; window.__hidden = false;
let permission = "default";
window.Notification = class {
  constructor(title, options) {
    window.__shown.push({ title, body: options?.body ?? "" });
    document.documentElement.dataset.notifications = String(window.__shown.length);
  }
  static get permission() { return permission; }
  static requestPermission() { window.__asked += 1; permission = "granted";
                               return Promise.resolve(permission); }
  close() {}
};
Object.defineProperty(document, "visibilityState",
                      { get: () => (window.__hidden ? "hidden" : "visible") });
"""


async def test_a_mention_in_a_hidden_tab_is_a_desktop_notification(
        page_server: Served, browser: Browser, users: list[User]) -> None:
    """The permission is asked only after a click; then a mention while the tab is
    hidden shows a notification, and nothing is marked read until the tab shows."""
    context = await browser.new_context(viewport={"width": 1100, "height": 700})
    await context.add_init_script(NOTIFICATIONS_RECORDED)
    alice = User(await context.new_page())
    users.append(alice)
    await alice.page.goto(f"{page_server.url}/?name=alice&room=a")
    await alice.in_room("a")
    bob = await open_user(users, browser, page_server.url, name="bob", room="a")
    await bob.in_room("a")
    assert await alice.page.evaluate("window.__asked") == 0  # no prompt on its own
    await alice.page.get_by_role("button", name="Notify me of mentions").click()
    await expect(alice.page.locator("#notify")).to_be_hidden(timeout=WAIT_MS)
    assert await alice.page.evaluate("window.__asked") == 1

    await alice.page.evaluate(
        "window.__hidden = true; document.dispatchEvent(new Event('visibilitychange'))")
    await bob.say("@alice are you there?")
    # (waited for through the DOM: the page's CSP refuses wait_for_function's eval)
    await expect(alice.page.locator("html")).to_have_attribute("data-notifications", "1",
                                                               timeout=WAIT_MS)
    assert await alice.page.evaluate("window.__shown") == [
        {"title": "bob in a", "body": "@alice are you there?"}]
    room = alice.page.locator("#joined-rooms button", has_text="a")
    await expect(room.locator(".badge.mention")).to_have_text("@1", timeout=WAIT_MS)
    await bob.say("not a mention")
    await expect(room.locator(".badge:not(.mention)")).to_have_text("2", timeout=WAIT_MS)
    await expect(bob.page.locator("#messages .seen")).to_have_count(0)
    await alice.screenshot("hidden-tab-badges")
    await alice.page.evaluate(
        "window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'))")
    await expect(room.locator(".badge")).to_have_count(0, timeout=WAIT_MS)
    await expect(bob.page.locator("#messages .seen")).to_have_text(["Seen by alice"],
                                                                   timeout=WAIT_MS)
    assert await alice.page.evaluate("window.__shown.length") == 1  # the second was no mention


async def test_the_sign_in_screen_shows_only_itself(page_server: Served, browser: Browser,
                                                    users: list[User]) -> None:
    """Before a name is given, the empty chat is not shown under the sign-in card
    (a class's display overrode the hidden attribute); after it, only the chat."""
    context = await browser.new_context(viewport={"width": 390, "height": 800})
    alice = User(await context.new_page())
    users.append(alice)
    await alice.page.goto(page_server.url + "/")
    await expect(alice.page.get_by_label("Display name")).to_be_visible(timeout=WAIT_MS)
    await expect(alice.page.locator("#chat")).to_be_hidden()
    # nor the connection's state or the offer of notifications: nothing is connected yet
    await expect(alice.page.locator("#status")).to_be_hidden()
    await expect(alice.page.locator("#notify")).to_be_hidden()
    await alice.screenshot("sign-in-only")
    await alice.page.get_by_label("Display name").fill("alice")
    await alice.page.get_by_label("Display name").press("Enter")
    await alice.connected()
    await expect(alice.page.locator("#chat")).to_be_visible()
    await expect(alice.page.locator("#login")).to_be_hidden()
    await expect(alice.page.locator("#status")).to_be_visible()


@contextlib.asynccontextmanager
async def direct(serve: ServeFactory, me: str, other: str
                 ) -> AsyncIterator[tuple[Served, Any, str]]:
    """A server in token mode, a Python client of ``me`` on it, and the direct
    conversation ``me`` opened with ``other``: (server, client, room)."""
    served = await serve(jwt_secret=SECRET)
    sio = sio_client(served.settings.serializer)
    await sio.connect(served.url, auth={"token": token(name=me)}, namespaces=[NAMESPACE],
                      wait_timeout=TIMEOUT)
    try:
        room = (await sio.call("direct", {"with": [other]}, namespace=NAMESPACE))["room"]
        yield served, sio, room
    finally:
        await sio.disconnect()


async def test_a_refusal_shows_the_servers_reason(serve: ServeFactory, browser: Browser,
                                                  users: list[User]) -> None:
    """A third person opening a direct conversation's link is told why in the
    server's words (it said "Only its sender can change that message." to every
    forbidden, whatever was refused)."""
    async with direct(serve, "alice", "bob") as (served, _, room):
        carol = await open_user(users, browser, served.url, token=token(name="carol"),
                                room=room)
        await expect(carol.page.locator("#alert")).to_have_text(
            "Only its participants may join a direct conversation.", timeout=WAIT_MS)


async def test_a_direct_message_found_by_search_is_named_by_its_people(
        serve: ServeFactory, browser: Browser, users: list[User]) -> None:
    """A search result from a direct conversation says who it is with, not its
    room's id (dm: and 40 hex characters, which also ran past the sidebar)."""
    async with direct(serve, "bob", "alice") as (served, sio, room):
        await sio.call("join", {"room": room}, namespace=NAMESPACE)
        await sio.call("send", {"room": room, "text": "the secret plans"}, namespace=NAMESPACE)
        alice = await open_user(users, browser, served.url, token=token(name="alice"),
                                room=room)
        await alice.shows("the secret plans")
        await alice.page.locator("#search-input").fill("secret")
        await alice.page.locator("#search-input").press("Enter")
        await expect(alice.page.locator("#search-results .result .where")).to_have_text(
            ["bob · bob"], timeout=WAIT_MS)
        await alice.screenshot("direct-found-by-search")


async def test_a_new_room_says_so_and_days_are_marked(page_server: Served, browser: Browser,
                                                      users: list[User]) -> None:
    """An empty room says it is empty; messages are under a line naming their
    day (Today, Yesterday, then the date), and each time's tooltip has the date."""
    alice = await open_user(users, browser, page_server.url, name="alice", room="fresh")
    await alice.in_room("fresh")
    await expect(alice.page.locator("#messages .empty")).to_have_text(
        "No messages here yet. Say hello!", timeout=WAIT_MS)
    await alice.say("hello")
    await alice.shows("hello")
    await expect(alice.page.locator("#messages .empty")).to_have_count(0)
    await expect(alice.page.locator("#messages .day")).to_have_text(["Today"])
    assert await alice.messages().first.locator("time").get_attribute("title")
    await alice.screenshot("days-today")
    now = await alice.page.evaluate("Date.now()")
    for ahead, label in ((1, "Yesterday"), (3, None)):
        await alice.page.clock.set_fixed_time(now / 1000 + ahead * 86_400)
        await alice.page.reload()
        await alice.shows("hello")
        day = alice.page.locator("#messages .day")
        if label is not None:
            await expect(day).to_have_text([label])
        else:  # a weekday and a date, not Today or Yesterday
            await expect(day).not_to_have_text(re.compile("^(Today|Yesterday)$"))
            await expect(day).to_have_count(1)
    await alice.screenshot("days-earlier")


async def test_opening_a_room_with_unread_messages_shows_where_they_start(
        page_server: Served, browser: Browser, users: list[User]) -> None:
    """A "New messages" line above the first message alice has not read, when she
    opens the room; none in a room she has read."""
    alice = await open_user(users, browser, page_server.url, name="alice", room="news")
    await alice.in_room("news")
    bob = await open_user(users, browser, page_server.url, name="bob", room="news")
    await bob.in_room("news")
    await bob.say("read already")
    await alice.shows("read already")
    await alice.page.get_by_label("Join or create a room").fill("chat")
    await alice.page.get_by_label("Join or create a room").press("Enter")
    await alice.in_room("chat")
    await expect(alice.page.locator("#messages .new-line")).to_have_count(0)
    for text in ("one", "two"):
        await bob.say(text)
    news = alice.page.locator("#joined-rooms button", has_text="news")
    await expect(news.locator(".badge")).to_have_text("2", timeout=WAIT_MS)
    await news.click()
    await alice.in_room("news")
    line = alice.page.locator("#messages .new-line")
    await expect(line).to_have_text("New messages")
    after = alice.page.locator("#messages .new-line + li .text")
    await expect(after).to_have_text("one")
    await alice.screenshot("new-messages-line")


PHONE_WIDTHS = (360, 390, 430)


async def overflow(user: User) -> int:
    """How far the page is wider than the screen (px): it should never be."""
    width: int = await user.page.evaluate(
        "document.documentElement.scrollWidth - window.innerWidth")
    return width


async def small_targets(user: User, where: str) -> list[str]:
    """The visible controls in ``where`` less than 44 px high (WCAG 2.5.5)."""
    found: list[str] = await user.page.evaluate("""(where) => [...document.querySelectorAll(
        `${where} button, ${where} input, ${where} textarea`)]
        .filter((e) => e.checkVisibility() && e.getBoundingClientRect().height < 44)
        .map((e) => `${e.id || e.textContent.trim()} ${e.getBoundingClientRect().height}`)""",
                                                where)
    return found


async def test_a_phone_shows_the_room_with_a_drawer_and_a_sheet(
        page_server: Served, browser: Browser, users: list[User]) -> None:
    """At 360 to 430 px the room takes the screen; the rooms are a drawer and the
    people a sheet, each opened by a button of 44 px or more, closed by choosing
    a room, the scrim or Escape (focus back on the button); nothing is wider than
    the screen, however long a name, room or word; and the composer and the last
    message stay in view when the keyboard takes half the screen."""
    long_room = "a-room-with-a-name-as-long-as-the-protocol-allows-0123456789abcd"
    word = "x" * 300
    for width in PHONE_WIDTHS:
        context = await browser.new_context(viewport={"width": width, "height": 740},
                                            has_touch=True, is_mobile=True)
        phone = User(await context.new_page())
        users.append(phone)
        await phone.page.goto(page_server.url + "/")
        assert await overflow(phone) <= 0, width
        name = f"someone-with-a-long-name-{width}"
        await phone.page.get_by_label("Display name").fill(name)
        await phone.page.get_by_label("Display name").press("Enter")
        await phone.connected()
        drawer = phone.page.locator("#rooms-panel")
        rooms = phone.page.get_by_role("button", name="Rooms", exact=True)
        await expect(drawer).to_be_visible()  # nothing to show yet: choose a room
        await expect(phone.page.get_by_label("Join or create a room")).to_be_focused()
        assert await small_targets(phone, "#rooms-panel") == [], width
        room = long_room[:-3] + str(width)  # (64 characters, one room per width)
        await phone.page.get_by_label("Join or create a room").fill(room)
        await phone.page.get_by_label("Join or create a room").press("Enter")
        await phone.in_room(room)
        await expect(drawer).to_be_hidden()
        await expect(rooms).to_have_attribute("aria-expanded", "false")
        for i in range(12):
            await phone.say(f"line {i}")
        await phone.say(word)
        await phone.shows(*[f"line {i}" for i in range(12)], word)
        assert await overflow(phone) <= 0, width
        assert await small_targets(phone, ".topbar") == [], width
        assert await small_targets(phone, ".room-head") == [], width
        assert await small_targets(phone, "#composer") == [], width

        people = phone.page.get_by_role("button", name=re.compile(r"^People"))
        await expect(people).to_have_text("People (1)")
        await people.click()
        await expect(phone.page.locator("#people-panel")).to_be_visible()
        await expect(phone.page.locator("#member-list")).to_have_text(name)
        await phone.page.keyboard.press("Escape")
        await expect(phone.page.locator("#people-panel")).to_be_hidden()
        await expect(people).to_be_focused()
        await rooms.click()
        await expect(drawer).to_be_visible()
        await phone.page.locator("#scrim").click(position={"x": width - 10, "y": 400})
        await expect(drawer).to_be_hidden()
        await expect(rooms).to_be_focused()

        # the on-screen keyboard takes half the screen: the composer and the last
        # message are still there to be seen
        await phone.page.set_viewport_size({"width": width, "height": 370})
        await phone.page.locator("#text-input").focus()
        await expect(phone.page.locator("#text-input")).to_be_in_viewport()
        await expect(phone.messages().last).to_be_in_viewport()
        assert await overflow(phone) <= 0, width
        await phone.screenshot(f"phone-{width}-keyboard")
        await context.close()
        users.remove(phone)


AXE = Path(__file__).resolve().parent.parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


async def violations(user: User, frame: Frame | None = None) -> list[str]:
    """What axe-core (tests/node, pinned) finds against WCAG 2.2 A and AA in the
    page as it is now (or in one of its frames): each rule broken, with the
    elements that break it."""
    where = frame or user.page.main_frame
    if not await where.evaluate("typeof axe !== 'undefined'"):
        await where.evaluate(AXE.read_text())  # (not a script tag: the CSP refuses those)
    found: list[dict[str, Any]] = await where.evaluate(
        "async (tags) => (await axe.run(document, {runOnly: tags})).violations", WCAG_AA)
    return [f"{v['id']} ({v['impact']}): {v['help']}: "
            + "; ".join(n["html"][:120] for n in v["nodes"][:5]) for v in found]


async def test_the_page_meets_wcag_aa_as_axe_checks_it(page_server: Served, browser: Browser,
                                                       users: list[User]) -> None:
    """Signing in, a room with messages, a mention and people, and the phone's
    drawer and sheet, in light and in dark mode: no WCAG 2.2 A or AA violation
    that axe-core finds (contrast included)."""
    for (width, height), scheme in itertools.product(((1100, 700), (390, 740)),
                                                     ("light", "dark")):
        context = await browser.new_context(viewport={"width": width, "height": height},
                                            color_scheme="dark" if scheme == "dark" else "light")
        user = User(await context.new_page())
        users.append(user)
        await user.page.goto(page_server.url + "/")
        assert await violations(user) == [], f"sign-in at {width} px, {scheme}"
        await user.page.get_by_label("Display name").fill(f"ann{width}{scheme}")
        await user.page.get_by_label("Display name").press("Enter")
        await user.connected()
        room = f"a11y-{width}-{scheme}"
        await user.page.get_by_label("Join or create a room").fill(room)
        await user.page.get_by_label("Join or create a room").press("Enter")
        await user.in_room(room)
        said = f"hello @ann{width}{scheme}, see https://example.org <b>not bold</b>"
        await user.say(said)
        await user.say("a second line")
        await user.shows(said, "a second line")
        assert await violations(user) == [], f"a room at {width} px, {scheme}"
        await user.screenshot(f"a11y-{width}-{scheme}")
        if width < 720:
            await user.page.get_by_role("button", name="Rooms", exact=True).click()
            await expect(user.page.locator("#rooms-panel")).to_be_visible()
            assert await violations(user) == [], "the rooms drawer"
            await user.page.keyboard.press("Escape")
            await user.page.get_by_role("button", name=re.compile("^People")).click()
            await expect(user.page.locator("#people-panel")).to_be_visible()
            assert await violations(user) == [], "the people sheet"
        await context.close()
        users.remove(user)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1100, 390])
async def test_every_state_of_a_room_meets_wcag_aa(page_server: Served, browser: Browser,
                                                   users: list[User], scheme: str,
                                                   width: int) -> None:
    """The states a person passes through in a room, each checked by axe on a
    desktop and a phone: the edit form, the reaction picker, a reply being
    written, a delete asking to be confirmed, search results (and none), and
    an error said aloud."""
    context = await browser.new_context(viewport={"width": width, "height": 740},
                                        color_scheme="dark" if scheme == "dark" else "light",
                                        reduced_motion="reduce")  # (screenshots: no slide)
    ann = User(await context.new_page())
    users.append(ann)
    room = f"states-{scheme}-{width}"
    await ann.page.goto(f"{page_server.url}/?name=ann{scheme}{width}&room={room}")
    await ann.in_room(room)
    await ann.say("first words")
    await ann.say("second words")
    await ann.shows("first words", "second words")
    for action in ("edit", "react", "reply", "delete"):
        await act(ann, 0, action)
        assert await violations(ann) == [], f"{action}, {scheme}, {width} px"
        await ann.screenshot(f"state-{action}-{scheme}-{width}")
        await ann.page.keyboard.press("Escape")  # (leaves the edit form, too)
    await expect(ann.page.locator("#messages .edit-form")).to_have_count(0)
    if width < 720:  # search is in the rooms drawer, which takes the focus as it opens
        await ann.page.get_by_role("button", name="Rooms", exact=True).click()
        await expect(ann.page.get_by_label("Join or create a room")).to_be_focused()
    await ann.page.get_by_label("Search your rooms").fill("words")
    await ann.page.get_by_label("Search your rooms").press("Enter")
    await expect(ann.page.locator("#search-results li")).to_have_count(2, timeout=WAIT_MS)
    assert await violations(ann) == [], f"search results, {scheme}, {width} px"
    await ann.screenshot(f"state-search-{scheme}-{width}")
    await ann.page.get_by_label("Search your rooms").fill("nowhere")
    await ann.page.get_by_label("Search your rooms").press("Enter")
    await expect(ann.page.locator("#search-results li")).to_have_text(["Nothing found."],
                                                                      timeout=WAIT_MS)
    if width < 720:
        await ann.page.keyboard.press("Escape")
    too_long = "x" * (page_server.settings.max_text_length + 1)
    await ann.page.locator("#text-input").fill(too_long)
    await ann.page.locator("#text-input").press("Enter")
    await expect(ann.page.locator("#alert")).to_contain_text("too long")
    assert await violations(ann) == [], f"no search results and an alert, {scheme}, {width} px"
    await ann.screenshot(f"state-alert-{scheme}-{width}")


async def test_messages_are_formatted_with_the_documented_markdown(
        page_server: Served, browser: Browser, users: list[User]) -> None:
    """Bold, italics, strikethrough, code, code blocks, quotes, lists and links
    (http, https, mailto; opened apart from the page) are rendered; headings,
    images and HTML stay text; the text is stored and searched as typed."""
    ann = await open_user(users, browser, page_server.url, name="ann", room="fmt")
    await ann.in_room("fmt")
    bob = await open_user(users, browser, page_server.url, name="bob", room="fmt")
    await bob.in_room("fmt")
    said = ["**bold** *it* ~~gone~~ `a < b`", "```\nfor x in y:\n    pass\n```",
            "> quoted\n\n- one\n- two", "[site](https://example.org) and https://example.com/x",
            "mail [me](mailto:ann@example.org)",
            "# not a heading\n![img](https://example.org/i.png)",
            "first line\nsecond line"]
    for text in said:
        await ann.say(text)
    await expect(bob.messages()).to_have_count(len(said), timeout=WAIT_MS)
    await expect(bob.page.locator("#messages .empty")).to_have_count(0)  # (it was, on joining)
    texts = bob.page.locator("#messages li[data-seq] .text")
    first = texts.nth(0)
    await expect(first.locator("strong")).to_have_text("bold")
    await expect(first.locator("em")).to_have_text("it")
    await expect(first.locator("s")).to_have_text("gone")
    await expect(first.locator("code")).to_have_text("a < b")
    await expect(texts.nth(1).locator("pre code")).to_have_text("for x in y:\n    pass\n")
    await expect(texts.nth(2).locator("blockquote")).to_have_text("quoted")
    await expect(texts.nth(2).locator("ul li")).to_have_text(["one", "two"])
    links = texts.nth(3).locator("a")
    await expect(links).to_have_count(2)
    for i, href in enumerate(["https://example.org", "https://example.com/x"]):
        await expect(links.nth(i)).to_have_attribute("href", href)
        await expect(links.nth(i)).to_have_attribute("target", "_blank")
        await expect(links.nth(i)).to_have_attribute("rel", re.compile("noopener noreferrer"))
    await expect(texts.nth(4).locator("a")).to_have_attribute("href", "mailto:ann@example.org")
    literal = texts.nth(5)
    assert await literal.locator("h1, img").count() == 0
    await expect(literal).to_contain_text("# not a heading")
    await expect(texts.nth(6).locator("br")).to_have_count(1)
    await bob.page.get_by_label("Search your rooms").fill("heading")
    await bob.page.get_by_label("Search your rooms").press("Enter")
    await expect(bob.page.locator("#search-results .said")).to_have_text(
        ["# not a heading ![img](https://example.org/i.png)"], timeout=WAIT_MS)
    await bob.screenshot("formatted")


# What every browser-facing chat must keep inert: the OWASP XSS filter evasion
# cheat sheet's cases that fit a message, and Markdown's own (links and images
# to script URLs, obfuscated schemes, attributes smuggled in titles).
XSS_PAYLOADS = [
    "<SCRIPT SRC=https://xss.example/xss.js></SCRIPT>",
    "<IMG SRC=\"javascript:alert('XSS');\">",
    "<IMG SRC=JaVaScRiPt:alert('XSS')>",
    "<IMG SRC=&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;&#97;&#108;&#101;"
    "&#114;&#116;&#40;&#39;&#88;&#83;&#83;&#39;&#41;>",
    "<a onmouseover=\"alert(document.cookie)\">xxs link</a>",
    "<IMG \"\"\"><SCRIPT>alert(\"XSS\")</SCRIPT>\">",
    "<IMG SRC=# onmouseover=\"alert('xxs')\">",
    "<IMG SRC=/ onerror=\"alert(String.fromCharCode(88,83,83))\"></img>",
    "<svg/onload=alert('XSS')>",
    "<BODY ONLOAD=alert('XSS')>",
    "<iframe src=\"javascript:alert('XSS');\"></iframe>",
    "<STYLE>@import'https://xss.example/xss.css';</STYLE>",
    "<META HTTP-EQUIV=\"refresh\" CONTENT=\"0;url=javascript:alert('XSS');\">",
    "<TABLE BACKGROUND=\"javascript:alert('XSS')\">",
    "<DIV STYLE=\"background-image: url(javascript:alert('XSS'))\">",
    "<OBJECT TYPE=\"text/x-scriptlet\" DATA=\"https://xss.example/scriptlet.html\"></OBJECT>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](  javascript:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](vbscript:msgbox(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](javascript:alert(1))",
    "<javascript:alert(1)>",
    "[x](https://example.org \"onmouseover=alert(1)\")",
    "[x](https://example.org\"onmouseover=\"alert(1))",
    "`<img src=x onerror=alert(1)>`",
    "```html\n<script>alert(1)</script>\n```",
    "**<img src=x onerror=alert(1)>**",
]


async def test_every_xss_payload_stays_inert(page_server: Served, browser: Browser,
                                             users: list[User]) -> None:
    mallory = await open_user(users, browser, page_server.url, name="mallory", room="owasp")
    await mallory.in_room("owasp")
    victim = await open_user(users, browser, page_server.url, name="victim", room="owasp")
    await victim.in_room("owasp")
    for payload in XSS_PAYLOADS:
        await mallory.say(payload)
    await expect(victim.messages()).to_have_count(len(XSS_PAYLOADS), timeout=WAIT_MS)
    for user in (victim, mallory):
        messages = user.page.locator("#messages")
        tags: list[str] = await user.page.evaluate("""() => [...new Set([...document
            .querySelectorAll('#messages .text *')].map((e) => e.localName))].sort()""")
        assert set(tags) <= {"p", "br", "strong", "em", "s", "code", "pre", "a", "blockquote",
                             "ul", "ol", "li"}, tags
        assert await messages.locator("script, img, svg, iframe, style, object").count() == 0
        handlers: int = await user.page.evaluate("""() => [...document.querySelectorAll(
            '#messages *')].filter((e) => [...e.attributes].some(
            (a) => a.name.startsWith('on') || a.name === 'style')).length""")
        assert handlers == 0
        hrefs: list[str] = await messages.locator("a").evaluate_all(
            "(links) => links.map((a) => a.getAttribute('href'))")
        assert all(re.match(r"(https?|mailto):", h or "") for h in hrefs), hrefs
        for link in await messages.locator("a").all():  # a click opens nothing dangerous
            await expect(link).to_have_attribute("rel", re.compile("noopener"))
    # (each user's page also reports no dialog, console error or page error: the fixture)


async def test_a_reload_while_the_server_is_away_shows_the_app_and_keeps_what_was_typed(
        tmp_path: Path, restartable: dict[str, object], browser: Browser,
        users: list[User]) -> None:
    """Installable and honest offline: the page names a manifest with 192 and 512
    px icons and a service worker takes it over; reloaded while the server is
    away, the app still comes up (from the worker's cache of the shell, and only
    the shell), in the room, with what was typed pending and the status not
    connected; when the server is back it is sent, and stored once."""
    proxy: Proxy = restartable["proxy"]  # type: ignore[assignment]
    alice = await open_user(users, browser, proxy.url, name="alice", room="kept")
    await alice.in_room("kept")
    await alice.say("before")
    await alice.shows("before")
    manifest = await alice.page.evaluate("fetch('/manifest.webmanifest').then((r) => r.json())")
    assert manifest["name"] == "Roomcast" and manifest["start_url"] == "/"
    assert {icon["sizes"] for icon in manifest["icons"]} == {"192x192", "512x512"}
    for icon in manifest["icons"]:  # each icon is there, a PNG of its size
        size = await alice.page.evaluate("""async (src) => {
            const image = await createImageBitmap(await (await fetch(src)).blob());
            return [image.width, image.height]; }""", icon["src"])
        assert f"{size[0]}x{size[1]}" == icon["sizes"]
    await alice.page.wait_for_function("navigator.serviceWorker.controller !== null",
                                       timeout=WAIT_MS)

    proxy.offline = alice.offline = True
    assert await restartable["server"].stop() == 0  # type: ignore[attr-defined]
    status = alice.page.locator("#status")
    await expect(status).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    await alice.say("typed while away")
    pending = alice.page.locator("#messages li.pending .text")
    await expect(pending).to_have_text("typed while away")
    await alice.page.reload()
    await alice.in_room("kept")  # the app, from the service worker's cache
    await expect(pending).to_have_text("typed while away")
    await expect(status).not_to_have_attribute("data-state", "connected")
    await alice.screenshot("reloaded-while-away")

    server, port = await start_server(tmp_path)
    restartable.update(server=server, port=port)
    proxy.upstream = port
    proxy.offline = False
    await alice.connected()
    alice.offline = False
    await alice.shows("before", "typed while away")
    await expect(alice.page.locator("#messages li.pending")).to_have_count(0)
    peer = await python_peer(f"http://127.0.0.1:{port}", "msgpack", "py", "kept")
    try:
        history = await peer.call("history", {"room": "kept"}, namespace=NAMESPACE)  # type: ignore
        assert [m["text"] for m in history["messages"]] == ["before", "typed while away"]
    finally:
        await peer.disconnect()  # type: ignore[attr-defined]
    cached: list[str] = await alice.page.evaluate("""async () => {
        const names = await caches.keys();  // the worker keeps one cache, of its version
        if (names.length !== 1) return names;
        const cache = await caches.open(names[0]);
        return (await cache.keys()).map((r) => new URL(r.url).pathname); }""")
    assert "/" in cached and all(path in ("/", "/manifest.webmanifest")
                                 or path.startswith("/static/") for path in cached), cached


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_an_owner_governs_a_room_from_the_page_and_its_people_see_where_they_stand(
        serve: ServeFactory, browser: Browser, users: list[User], transport: str) -> None:
    """Olive creates a moderated room from the join form, mutes bob from the
    member list, sets a topic and read-only in the room settings, gets bob's
    report there and deletes the message, then bans bob: at each step bob's
    page says where he stands, and the states pass axe."""
    served = await serve(jwt_secret=SECRET)
    polling = {"transport": "polling"} if transport == "polling" else {}
    olive = await open_user(users, browser, served.url, token=token(name="olive"), **polling)
    await olive.connected(transport)
    await olive.page.get_by_label("Join or create a room").fill("team")
    await olive.page.get_by_label("A new room of your own").select_option("public")
    await olive.page.get_by_label("Join or create a room").press("Enter")
    await olive.in_room("team")
    await olive.say("welcome")
    bob = await open_user(users, browser, served.url, token=token(name="bob"), room="team",
                          **polling)
    await bob.in_room("team")
    await bob.shows("welcome")
    await bob.say("buy cheap watches")
    await olive.shows("welcome", "buy cheap watches")
    # mute, from the member list
    await olive.page.get_by_role("button", name="Mute 10 min bob").click()
    state = bob.page.locator("#room-state")
    await expect(state).to_have_text(re.compile(r"You are muted here until .*\d"), timeout=WAIT_MS)
    await expect(bob.page.locator("#text-input")).to_be_disabled()
    assert await violations(bob) == [], "muted"
    # the room settings: a topic and read-only
    await olive.page.get_by_role("button", name="Room settings").click()
    dialog = olive.page.locator("#settings-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator(".people li")).to_have_text(
        [re.compile("bob.*muted"), re.compile("olive.*owner")])
    assert await violations(olive) == [], "the room settings"
    await dialog.get_by_label("Topic").fill("watches are off topic")
    await dialog.get_by_label("Read-only").check()
    await dialog.get_by_role("button", name="Save settings").click()
    await expect(bob.page.locator("#room-topic")).to_have_text("watches are off topic",
                                                               timeout=WAIT_MS)
    await expect(dialog.locator(".audit li")).to_have_count(3, timeout=WAIT_MS)
    await dialog.get_by_role("button", name="Unmute").click()
    await expect(state).to_have_text(re.compile("read-only"), timeout=WAIT_MS)
    await expect(bob.page.locator("#text-input")).to_be_disabled()
    # bob reports a message to the room's moderators
    welcome = bob.page.locator('#messages li[data-seq="2"]')
    await welcome.hover()
    await welcome.get_by_role("button", name="Report").click()
    await expect(bob.page.locator("#alert")).to_have_text("Reported to the room's moderators.")
    await expect(dialog.locator(".reports li")).to_have_text(
        [re.compile("olive: welcome.*reported by bob")], timeout=WAIT_MS)
    await dialog.get_by_role("button", name="Delete the message").click()
    await expect(dialog.locator(".reports li")).to_have_text(["No open reports."],
                                                             timeout=WAIT_MS)
    await expect(bob.page.locator("#messages li.deleted")).to_have_count(1, timeout=WAIT_MS)
    await dialog.get_by_role("button", name="Close").click()
    # a ban, from the member list: two clicks
    await olive.page.get_by_role("button", name="Ban bob").click()
    await olive.page.get_by_role("button", name="Confirm: Ban bob").click()
    await expect(bob.page.locator("#alert")).to_have_text("You were banned from team.",
                                                          timeout=WAIT_MS)
    await expect(bob.page.locator("#joined-rooms")).not_to_contain_text("team")
    await expect(olive.page.locator("#member-list li")).to_have_count(1, timeout=WAIT_MS)
    assert await violations(bob) == [], "banned"


async def test_an_invite_link_lets_its_holder_into_a_private_room(
        serve: ServeFactory, browser: Browser, users: list[User]) -> None:
    """A private room made from the join form keeps a stranger out; its owner
    makes an invite link in the room settings, and whoever opens it is in,
    as a member, the code gone from the address bar."""
    served = await serve(jwt_secret=SECRET)
    olive = await open_user(users, browser, served.url, token=token(name="olive"))
    await olive.connected()
    await olive.page.get_by_label("Join or create a room").fill("hideout")
    await olive.page.get_by_label("A new room of your own").select_option("private")
    await olive.page.get_by_label("Join or create a room").press("Enter")
    await olive.in_room("hideout")
    await olive.say("just us")
    carol = await open_user(users, browser, served.url, token=token(name="carol"),
                            room="hideout")
    await carol.connected()
    await expect(carol.page.locator("#alert")).to_have_text(
        re.compile("private: an owner or a moderator must add you"), timeout=WAIT_MS)
    await olive.page.get_by_role("button", name="Room settings").click()
    dialog = olive.page.locator("#settings-dialog")
    await dialog.get_by_role("button", name="Make an invite link (7 days)").click()
    link = dialog.get_by_label("The invite link: whoever opens it joins as a member")
    await expect(link).to_have_value(re.compile(r"invite="), timeout=WAIT_MS)
    url = await link.input_value()
    assert await violations(olive) == [], "the invite link"
    await carol.page.goto(url + "&token=" + token(name="carol"))
    await carol.in_room("hideout")
    await carol.shows("just us")
    assert "invite=" not in carol.page.url
    await expect(dialog.locator(".audit li").first).to_contain_text(
        "olive made carol a member (invite)", timeout=WAIT_MS)


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


async def test_files_go_by_button_drop_and_paste_and_show_as_thumbnails_and_cards(
        page_server: Served, browser: Browser, users: list[User]) -> None:
    """A file sent by the button, dropped on the room or pasted arrives as a
    message: an image as a thumbnail that opens the full size, any other file
    as a card with its name and size that downloads it."""
    alice = await open_user(users, browser, page_server.url, name="alice", room="pics")
    await alice.in_room("pics")
    bob = await open_user(users, browser, page_server.url, name="bob", room="pics")
    await bob.in_room("pics")
    async with alice.page.expect_file_chooser() as chooser:
        await alice.page.locator("#attach").click()
    await (await chooser.value).set_files(
        FilePayload(name="sky.png", mimeType="image/png", buffer=png_bytes(900, 600)))
    image = bob.page.locator("#messages li[data-seq] a.attachment.image")
    await expect(image).to_have_count(1, timeout=WAIT_MS)
    thumb = image.locator("img")
    await expect(thumb).to_have_attribute("alt", "sky.png")
    assert await thumb.evaluate("img => img.complete && img.naturalWidth") == 320
    assert await image.get_attribute("target") == "_blank"
    async with aiohttp.ClientSession() as http:
        async with http.get(page_server.url + str(await image.get_attribute("href"))) as r:
            assert r.status == 200 and Image.open(io.BytesIO(await r.read())).size == (900, 600)
    # dropped on the room
    await alice.page.evaluate("""() => {
        const data = new DataTransfer();
        data.items.add(new File(["the minutes\\n"], "minutes.txt", { type: "text/plain" }));
        const room = document.querySelector("section.room");
        room.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true,
                                                       cancelable: true }));
        room.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true,
                                                   cancelable: true }));
    }""")
    card = bob.page.locator("#messages li[data-seq] a.attachment.file")
    await expect(card).to_have_count(1, timeout=WAIT_MS)
    await expect(card).to_contain_text("minutes.txt")
    await expect(card).to_contain_text("12 B")
    assert await card.get_attribute("download") == "minutes.txt"
    # pasted into the message box
    await alice.page.locator("#text-input").evaluate("""box => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array([0, 1, 2, 3])], "blob.bin"));
        box.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true,
                                                        cancelable: true }));
    }""")
    await expect(card).to_have_count(2, timeout=WAIT_MS)
    await expect(card.nth(1)).to_contain_text("blob.bin")
    await expect(alice.page.locator("#uploads")).to_be_hidden()


async def test_an_upload_shows_its_progress_and_resumes_after_a_dropped_connection(
        page_server: Served, browser: Browser, users: list[User]) -> None:
    proxy = await Proxy(int(page_server.url.rsplit(":", 1)[1])).start()
    try:
        alice = await open_user(users, browser, proxy.url, name="alice", room="big")
        await alice.in_room("big")
        data = random.Random(5).randbytes(12 * 1024 * 1024)  # (two of the page's requests)
        start = proxy.received
        await alice.page.locator("#file-input").set_input_files(
            FilePayload(name="big.bin", mimeType="application/octet-stream", buffer=data))
        await until(lambda: proxy.received > start + 3 * 1024 * 1024, timeout=30)
        proxy.stall()
        progress = alice.page.locator("#uploads progress")
        await expect(progress).to_be_visible()
        await alice.page.wait_for_function(  # (progress events come every 50 ms or so)
            "size => { const p = document.querySelector('#uploads progress');"
            " return p && p.value > 0 && p.value < size; }", arg=len(data), timeout=WAIT_MS)
        proxy.offline = alice.offline = True
        proxy.cut()
        proxy.resume()
        await expect(alice.page.locator("#uploads .upload.waiting")).to_have_count(
            1, timeout=WAIT_MS)
        proxy.offline = False
        card = alice.page.locator("#messages li[data-seq] a.attachment.file")
        await expect(card).to_contain_text("big.bin", timeout=30_000)
        alice.offline = False
        async with aiohttp.ClientSession() as http:
            async with http.get(page_server.url + str(await card.get_attribute("href"))) as r:
                assert await r.read() == data
        assert proxy.received - start > len(data)  # (cut: some of it went twice)
    finally:
        await proxy.close()


@pytest.mark.parametrize("name, content, download", [
    ("page.html", b"<!doctype html><script>alert('html ran')</script>", True),
    ("image.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(\'svg ran\')"/>', True),
    ("polyglot.png", png_bytes(8, 8) + b"<script>alert('polyglot ran')</script>", False),
], ids=["html", "svg", "polyglot"])
async def test_an_uploaded_page_never_runs_as_the_chat(
        page_server: Served, browser: Browser, users: list[User], name: str, content: bytes,
        download: bool) -> None:
    """Opened in Chromium from its link, an uploaded HTML or SVG file is a
    download, and a PNG that is also HTML shows as an image: no script of
    theirs runs (a dialog would be a problem of the user's, failing the test)."""
    alice = await open_user(users, browser, page_server.url, name="alice", room="x")
    await alice.in_room("x")
    sio = await python_peer(page_server.url, page_server.settings.serializer, "up", "x")
    try:
        call = sio.call  # type: ignore[attr-defined]
        grant = (await call("upload", {"room": "x", "name": name, "size": len(content)},
                            namespace=NAMESPACE, timeout=TIMEOUT))["upload"]
        await asyncio.to_thread(tus_upload, page_server.url, grant, content)
        await call("send", {"room": "x", "text": "", "attachments": [grant["id"]]},
                   namespace=NAMESPACE, timeout=TIMEOUT)
    finally:
        await sio.disconnect()  # type: ignore[attr-defined]
    link = alice.page.locator(f"#messages a.attachment[data-file='{grant['id']}']")
    await expect(link).to_have_count(1, timeout=WAIT_MS)
    url = page_server.url + str(await link.get_attribute("href"))
    opened = await alice.page.context.new_page()
    opened.on("dialog", lambda dialog: alice.problems.append(f"dialog: {dialog.message}"))
    if download:
        async with opened.expect_download() as downloading:
            with contextlib.suppress(Exception):  # ("Download is starting": no page to show)
                await opened.goto(url)
        assert (await downloading.value).suggested_filename == name
    else:
        await opened.goto(url)
        assert await opened.evaluate("document.contentType") == "image/png"
        assert await opened.locator("script").count() == 0
    await opened.close()
