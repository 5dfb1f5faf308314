"""Settings: flags over ROOMCAST_* variables over defaults, errors that name the culprit."""

from __future__ import annotations

import pytest

from app.settings import Settings


def test_defaults() -> None:
    """With nothing set: 0.0.0.0:8080, msgpack, SQLite under data/, 25 s / 20 s heartbeat."""
    s = Settings.load([], {})
    assert (s.host, s.port, s.serializer) == ("0.0.0.0", 8080, "msgpack")
    assert s.store == "sqlite:///data/roomcast.db"
    assert (s.ping_interval, s.ping_timeout, s.max_text_length) == (25.0, 20.0, 4000)


def test_environment_then_flags() -> None:
    """ROOMCAST_* variables override defaults; flags override variables."""
    env = {"ROOMCAST_HOST": "127.0.0.1", "ROOMCAST_PORT": "9000", "ROOMCAST_STORE": "memory://",
           "ROOMCAST_SERIALIZER": "json", "ROOMCAST_PING_INTERVAL": "2",
           "ROOMCAST_PING_TIMEOUT": "1.5"}
    s = Settings.load([], env)
    assert (s.host, s.port, s.store, s.serializer) == ("127.0.0.1", 9000, "memory://", "json")
    assert (s.ping_interval, s.ping_timeout) == (2.0, 1.5)
    s = Settings.load(["--port", "9001", "--serializer", "msgpack"], env)
    assert (s.port, s.serializer, s.host) == (9001, "msgpack", "127.0.0.1")


@pytest.mark.parametrize("env, culprit", [
    ({"ROOMCAST_PORT": "http"}, "ROOMCAST_PORT"),
    ({"ROOMCAST_SERIALIZER": "xml"}, "ROOMCAST_SERIALIZER"),
    ({"ROOMCAST_PING_TIMEOUT": "soon"}, "ROOMCAST_PING_TIMEOUT"),
])
def test_bad_variables_are_named(env: dict[str, str], culprit: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A bad variable stops start-up with a message that names it."""
    with pytest.raises(SystemExit):
        Settings.load([], env)
    assert culprit in capsys.readouterr().err


def test_invalid_values_are_refused() -> None:
    """Values out of range are refused by the dataclass itself."""
    with pytest.raises(ValueError):
        Settings(port=70000)
    with pytest.raises(ValueError):
        Settings(ping_interval=0)
    with pytest.raises(ValueError):
        Settings(serializer="xml")


@pytest.mark.parametrize("url", ["//evil.example/sign-in", "javascript:alert(1)", "sign-in",
                                 "ftp://example.org/"])
def test_a_sign_in_url_is_a_path_or_a_web_address(url: str) -> None:
    """The page links to it: only a path of this site or an http(s) address."""
    with pytest.raises(ValueError, match="sign_in_url"):
        Settings(sign_in_url=url)
    for fine in ("/sign-in", "https://id.example.org/login?app=chat", "http://localhost:9000/"):
        assert Settings(sign_in_url=fine).sign_in_url == fine
