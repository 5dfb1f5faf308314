"""The HTTP API, ``/api/v1/`` (docs/api.md): an interface beside the Socket.IO
namespace that calls the same chat services. routes.py holds the endpoints,
models.py what they validate with, openapi.py the document made from both,
keys.py the API keys."""
