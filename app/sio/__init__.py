"""The Socket.IO v5 layer: python-socketio's server on our Engine.IO engine."""
