"""Roomcast's Python client (:class:`ChatClient`), bot and command line."""

from .chat_client import ChatClient, ChatClientError

__all__ = ["ChatClient", "ChatClientError"]
