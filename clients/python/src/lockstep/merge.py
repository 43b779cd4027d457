"""RFC 7386 JSON Merge Patch, as lockstep applies it to agent state."""

from __future__ import annotations

import copy
from typing import Any, Dict

__all__ = ["apply_merge_patch", "merge_patch_between"]


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


def merge_patch_between(old: Any, new: Any) -> Any:
    """A merge patch that turns ``old`` into ``new`` (objects both): members of ``old`` missing
    from ``new`` become ``None`` (deleted), object members are diffed recursively, anything else
    is replaced. Members of ``new`` that are ``None`` delete, as in any merge patch (JSON merge
    patches cannot store a ``null``). ``apply_merge_patch(old, merge_patch_between(old, new))``
    equals ``new`` without its ``None`` members."""
    if not isinstance(new, dict) or not isinstance(old, dict):
        return copy.deepcopy(new)
    patch: Dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key in old and old[key] == value:
            continue
        patch[key] = merge_patch_between(old.get(key), value) if key in old else copy.deepcopy(value)
    return patch
