"""The chat: the /chat namespace and what it is made of.

``namespace`` (join, leave, send, history, typing, rooms), ``protocol``
(payload parsing, no I/O), ``errors``, ``models``, ``auth`` (names, tokens,
the origin check) and ``limits`` (token buckets). It sits on the Socket.IO
server (:mod:`app.sio`) and on the backends behind their interfaces
(:mod:`app.store`, :mod:`app.presence`); nothing below it imports it.
"""
