"""Tools beside the server: ``python -m app.tools.cluster`` (``make cluster``)."""
