"""params.yaml rewritten to new content with its comments, key order and styles kept (ruamel.yaml's
round trip), and written atomically: what ``segbench study`` writes with.

:func:`render` is checked: its text must parse back to exactly the content asked for, or it
raises instead of returning a file that says something else (DVC's own ``-S '~key'`` once wrote
an unparsable params.yaml when it removed the last commented entry of a section).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import yaml


def flow(value: Any) -> str:
    """``value`` as one line of YAML flow style."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.removesuffix("...\n").strip()


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one rename (a kill leaves the old file or the new one),
    keeping its permissions; a symlink is written through."""
    path = path.resolve()
    tmp = path.with_name(f".{path.name}.study-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- params.yaml rewritten with its comments (ruamel.yaml round trip) -------------------------
#
# ruamel keeps a comment as text on the key it follows: `key: value  # this` and every full line
# below it up to the next key are one token on `key` (on the deepest last key of a block
# mapping). The lines after an entry's last key therefore head the *next* entry, or close the
# section; removing or adding an entry moves them to whatever now comes before that entry.


def render(text: str, old: dict, new: dict, *, source: str) -> str:
    """``text`` (a params file whose content is ``old``) rewritten to hold ``new``, with its
    comments and key order; checked to parse back to exactly ``new``."""
    rt = _round_trip()
    doc = rt.load(text)
    for key in list(doc):
        if key in new and isinstance(doc[key], dict) and isinstance(new[key], dict):
            _sync(doc, key, old[key], new[key])
        elif key in new and flow(old[key]) != flow(new[key]):
            _replace(doc, key, new[key])
    for key in new:
        if key not in doc:
            doc[key] = _node(new[key])
    out = io.StringIO()
    rt.dump(doc, out)
    result = out.getvalue()
    if flow(yaml.safe_load(result)) != flow(new):  # type-exact: 1 and 1.0 differ
        raise RuntimeError(
            f"segbench study: the rewritten {source} would not parse back to the merged "
            "params (a bug); nothing written"
        )
    return result


def _round_trip():
    from ruamel.yaml import YAML

    rt = YAML()  # round trip: comments, key order, flow/block style and quotes kept
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap a line
    rt.indent(mapping=2, sequence=4, offset=2)  # a new block list: `  - item` under its key
    rt.representer.add_representer(type(None), _represent_null)
    rt.representer.add_representer(float, _represent_float)
    return rt


def _represent_null(representer, _value):
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")  # as params.yaml has it


def _represent_float(representer, value: float):
    """A new float as PyYAML (YAML 1.1) reads it back: ``1.0e-05``, not ``1e-05`` (a string)."""
    if value != value or value in (float("inf"), float("-inf")):
        text = ".nan" if value != value else ("-.inf" if value < 0 else ".inf")
    else:
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def _node(value: Any) -> Any:
    """A plain value as a round-trip node: lists of scalars in flow style (``[1, 2]``, as
    params.yaml writes them), mappings and other lists in block style."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        return CommentedMap((k, _node(v)) for k, v in value.items())
    if isinstance(value, list):
        seq = CommentedSeq(_node(v) for v in value)
        if not any(isinstance(v, dict | list) for v in value):
            seq.fa.set_flow_style()
        return seq
    return value


def _block(value: Any) -> bool:
    """Whether ``value`` is a non-empty block-style mapping or sequence."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    return (
        isinstance(value, CommentedMap | CommentedSeq) and bool(value) and not value.fa.flow_style()
    )


def _tail_slot(parent, key) -> tuple[Any, Any]:
    """``(mapping, key)`` whose comment token follows the last line of ``parent[key]``."""
    value = parent[key]
    if _block(value) and hasattr(value, "keys"):
        return _tail_slot(value, list(value)[-1])
    if _block(value) and _block(value[-1]) and hasattr(value[-1], "keys"):
        return _tail_slot(value[-1], list(value[-1])[-1])
    return parent, key


def _token(parent, key):
    """The comment token on ``parent[key]``: after a scalar or flow value, or after ``key:``
    of a block one (a collection may hold it itself, as ``ca.comment[0]``)."""
    slot = parent.ca.items.get(key)
    if slot and slot[2] is not None:
        return slot[2]
    own = getattr(getattr(parent[key], "ca", None), "comment", None)
    return own[0] if own else None


def _set_token(parent, key, text: str) -> None:
    """Make ``text`` the comment token on ``parent[key]`` ("" or "\\n": none)."""
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    token = _token(parent, key)
    if text in ("", "\n"):
        if key in parent.ca.items:
            parent.ca.items[key][2] = None
        own = getattr(getattr(parent[key], "ca", None), "comment", None)
        if own:
            own[0] = None
    elif token is not None:
        token.value = text
    else:  # no comment yet: the text starts on the next line
        slot = parent.ca.items.setdefault(key, [None, None, None, None])
        text = text if text.startswith("\n") else "\n" + text
        slot[2] = CommentToken(text, CommentMark(0), None)


def _get_tail(parent, key) -> str:
    token = _token(*_tail_slot(parent, key))
    return "" if token is None else token.value


def _set_tail(parent, key, text: str) -> None:
    """Make ``text`` the comment after ``parent[key]``'s last line."""
    _set_token(*_tail_slot(parent, key), text)


def _split(text: str, column: int) -> tuple[str, str]:
    """A token's text as ``(own, follow)``: the end of the key's own line with the comment
    lines indented deeper than ``column`` that continue it, and the lines that follow it (a
    comment heading the next key at ``column``, blank lines, what closes the section)."""
    if not text:
        return "\n", ""
    head, _, rest = text.partition("\n")
    lines = rest.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].lstrip().startswith("#"):
        if len(lines[n]) - len(lines[n].lstrip()) <= column:
            break
        n += 1
    return head + "\n" + "".join(lines[:n]), "".join(lines[n:])


def _has_comment(text: str) -> bool:
    return any(line.lstrip().startswith("#") for line in text.splitlines())


def _column(mapping) -> int:
    """The column of ``mapping``'s keys in the file (0 for a mapping made here)."""
    try:
        return mapping.lc.key(next(iter(mapping)))[1]
    except (AttributeError, KeyError, StopIteration, TypeError):
        return 0


def _replace(parent, key, value: Any) -> None:
    """Set ``parent[key]`` to a new value, keeping the comment on its line and the lines after
    the old value (those head the next key)."""
    old = parent[key]
    own, follow = _split(_get_tail(parent, key), _column(parent))
    if _block(old):  # the old value's own comments go with it; the one on `key:` stays
        token = _token(parent, key)
        own = _split(token.value if token else "", _column(old))[0]
    parent[key] = _node(value)
    if _block(parent[key]):
        _set_token(parent, key, own)
        _set_tail(parent, key, "\n" + follow)
    else:
        _set_token(parent, key, own + follow)


def _sync(parent, key, old: dict, new: dict) -> None:
    """Make the mapping ``parent[key]`` (holding ``old``) hold ``new``: changed values set in
    place, removed keys dropped with their own comments, new keys appended."""
    node = parent[key]
    for k in list(node):
        if k not in new or flow(old[k]) == flow(new[k]):
            continue
        if isinstance(node[k], dict) and isinstance(new[k], dict) and isinstance(old[k], dict):
            _sync(node, k, old[k], new[k])
        else:
            _replace(node, k, new[k])
    removed = [k for k in node if k not in new]
    added = {k: v for k, v in new.items() if k not in node}
    if not removed and not added:
        return
    if not _block(node):  # a flow mapping, or an empty one: no comment lines inside
        for k in removed:
            del node[k]
        node.update((k, _node(v)) for k, v in added.items())
        return
    _restructure(parent, key, removed, added)


def _restructure(parent, key, removed: list, added: dict) -> None:
    """Remove and append keys of the block mapping ``parent[key]``, moving the comment lines
    between its keys: a comment block heads the group of keys up to the next block, and stays
    (before the group's first kept key) while any key of its group is kept."""
    node = parent[key]
    keys, column = list(node), _column(node)
    parts = [_split(_get_tail(node, k), column) for k in keys]
    keyline = _token(parent, key)
    keyline_own, first = _split(keyline.value if keyline else "", column)
    header = [first] + [follow for _, follow in parts[:-1]]  # the lines before each key
    group = [0] * len(keys)
    for i in range(1, len(keys)):
        group[i] = i if _has_comment(header[i]) else group[i - 1]
    kept = [i for i, k in enumerate(keys) if k not in removed]
    before = {}  # kept index -> the lines to put before it
    for p, i in enumerate(kept):
        same_group = p > 0 and group[kept[p - 1]] == group[i]
        before[i] = header[i] if same_group else header[group[i]]
    for k in removed:
        del node[k]
        node.ca.items.pop(k, None)
    node.update((k, _node(v)) for k, v in added.items())
    order = list(node)
    for p, k in enumerate(order):
        own = parts[keys.index(k)][0] if k in keys else "\n"
        if p + 1 == len(order):
            follow = parts[-1][1]  # what closed the section
        else:
            nxt = order[p + 1]
            follow = before.get(keys.index(nxt), "") if nxt in keys else ""
        _set_tail(node, k, own + follow)
    if order:  # after `key:`, before the first key
        _set_token(parent, key, keyline_own + before[kept[0]] if kept else keyline_own)
    else:  # `key: {}`, then what closed the section
        node.fa.set_flow_style()
        _set_token(parent, key, keyline_own + parts[-1][1])
