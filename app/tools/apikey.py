"""Make an HTTP API key: ``python -m app.tools.apikey NAME SCOPES ROOMS``.

Prints the key (give it to the backend that will call the API; it is shown
once and kept nowhere) and its ``--api-keys`` entry (the server's side: the
key's SHA-256, no secret), e.g.::

    python -m app.tools.apikey ci-bot publish,read 'builds-*,deploys'
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..api.keys import SCOPES, entry, new_key


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.tools.apikey", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the identity the key acts as (a bot's name)")
    parser.add_argument("scopes", help="comma-separated: " + ", ".join(SCOPES))
    parser.add_argument("rooms", help="comma-separated room names or patterns (* any)")
    args = parser.parse_args(argv)
    key = new_key()
    try:
        line = entry(args.name, args.scopes, args.rooms, key)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"key (for the caller; shown once): {key}")
    print(f"entry (for ROOMCAST_API_KEYS):    {line}")


if __name__ == "__main__":
    main(sys.argv[1:])
