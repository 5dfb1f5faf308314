"""The core: what every layer above the wire shares, knowing no sockets.

``models`` (messages, changes, pages, readings, the ``RoomName`` and ``Sid``
types), ``errors`` (:class:`~app.core.errors.ChatError` and its codes) and
``limits`` (token buckets, bounds on work in flight). Pure: it imports
nothing else of Roomcast and does no I/O (``tests/unit/test_layers.py``).
"""
