"""Strict YAML for specs: plain data only, no aliases/anchors, no duplicate keys, bounded size.

``yaml.safe_load`` already refuses tags that build objects, but it expands aliases: a 574-byte spec of
nested aliases ("billion laughs") reached MemoryError at 3.6 GB. A spec is a small hand-written file,
so anchors and aliases are refused outright (write the values out, or use ``include``/``when`` rules),
and a key written twice in one mapping is an error rather than the last one silently winning.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_SPEC_BYTES", "YAMLSpecError", "load_yaml"]

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: far above any hand-written spec


class YAMLSpecError(ValueError):
    """The text is not a plain YAML document this loader accepts; the message says where and why."""


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and duplicate mapping keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: ANN401
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise YAMLSpecError(f"YAML aliases (*{event.anchor}) are not allowed in a spec ({_where(event.start_mark)}); "
                                "write the value out.")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise YAMLSpecError(f"YAML anchors (&{anchor}) are not allowed in a spec ({_where(event.start_mark)}); "
                                "write the value out where it is used.")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # noqa: ANN401
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YAMLSpecError(f"YAML merge keys (<<) are not allowed in a spec ({_where(key_node.start_mark)}).")
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise YAMLSpecError(f"a mapping key must be a plain value ({_where(key_node.start_mark)}).") from None
            if key in seen:
                raise YAMLSpecError(f"key {key!r} appears twice in one mapping ({_where(seen[key])} and "
                                    f"{_where(key_node.start_mark)}); keep one.")
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse one spec document strictly (see the module docstring); raises :class:`YAMLSpecError`."""
    if len(text.encode("utf-8", "replace")) > MAX_SPEC_BYTES:
        raise YAMLSpecError(f"the spec is larger than {MAX_SPEC_BYTES} bytes; a spec is a small hand-written file.")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise YAMLSpecError(f"not valid YAML: {e}") from None
