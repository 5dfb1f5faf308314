"""Outgoing webhooks: every event of the rooms a webhook subscribes to, POSTed
to its URL, in each room's order, signed, retried until acknowledged.

==================  ==========================================================
module              holds
==================  ==========================================================
``webhook.py``      what a webhook is, what a delivery carries, its signature
                    (pure)
``delivery.py``     one webhook's deliveries: dirty rooms, cursors, retries,
                    dead letters
``tail.py``         the latest entries of wanted rooms, as this node stored
                    them, each event encoded once for every webhook
``relay.py``        what the nodes share: notices of new entries, leases
``service.py``      :class:`Webhooks`: the list, notices, leases, and what the
                    API does (create, list, delete, dead letters, replay)
==================  ==========================================================

The guarantee rests on the store: a webhook's cursor per room is moved only
after its receiver acknowledged the events up to it, so whatever stops
(the receiver, the delivering node, Redis) the events after the cursor go
out again, in order, with the same ids. docs/api.md states it for users.
"""
