"""Roomcast: a Socket.IO chat service with rooms, durable history and recovery."""
