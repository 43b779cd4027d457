"""RFC 7386 JSON Merge Patch, as lockstep applies it to agent state."""

from __future__ import annotations

import copy
from typing import Any, Dict

__all__ = ["apply_merge_patch"]


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """Return ``target`` with ``patch`` applied, as RFC 7386 section 2 specifies.

    Neither argument is modified. A ``None`` (JSON ``null``) member of ``patch`` deletes that member;
    an object member merges recursively; anything else replaces. A non-object ``patch`` replaces the
    target as a whole.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: Dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
