"""The WebSocket layer (RFC 6455): handshake, framing, one connection.

Knows nothing of Engine.IO: a connection hands whole messages to a listener.
"""
