"""The Engine.IO v4 layer: the only place that knows the wire below Socket.IO.

``packets`` and ``session`` are pure (no I/O); ``server`` is the engine
python-socketio runs on; ``polling`` is long-polling; WebSocket
connections come from :mod:`app.ws`. Nothing here imports Socket.IO or chat.
"""
