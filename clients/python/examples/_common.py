"""Shared by the examples: where the server is."""

from __future__ import annotations

import os
import sys


def address() -> str:
    """The server address: the first argument, else $LOCKSTEP_ADDR, else 127.0.0.1:7600."""
    if len(sys.argv) > 1:
        return sys.argv[1]
    return os.environ.get("LOCKSTEP_ADDR") or "127.0.0.1:7600"
