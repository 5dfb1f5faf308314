"""The chat: every feature as a service over a core that knows no sockets.

:mod:`app.chat.services` builds the services (connections, rooms, messages,
reads, direct conversations, search, recovery), each with the collaborators
it needs: the store and presence behind their interfaces (:mod:`app.store`,
:mod:`app.presence`), settings, metrics and a :class:`~app.chat.wire.Wire`.
:mod:`app.chat.namespace` is their Socket.IO interface: it parses
(:mod:`app.chat.protocol`, no I/O), calls a service and acknowledges.
Nothing below the chat imports it, and it imports nothing of the wire
(``tests/unit/test_layers.py``).
"""
