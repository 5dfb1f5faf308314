"""Files over HTTP, beside the socket: uploads (tus 1.0) and downloads by link.

An interface, like the namespace and the HTTP API: it parses requests and
calls the chat's :class:`~app.chat.attachments.Attachments` service, which
decides. :mod:`app.uploads.tus` reads tus's headers (pure);
:mod:`app.uploads.routes` is the aiohttp side.
"""
