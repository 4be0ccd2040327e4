"""``segbench study FILE``: make params.yaml one study's configuration, its comments kept.

A study file (``configs/study-*.yaml``) holds what one published study did as the keys that
differ from ``params.yaml``, plus one section that is not a params key::

    study:
      name: ultrasound-sam-vs-unet   # the suggested `dvc exp run --name`
      keep: [unet, sam_decoder]      # models/ensembles entries kept; omitted or null: all

The file is merged into params.yaml as ``segbench experiment`` merges (mappings key by key,
lists and scalars replaced whole), the entries ``keep`` leaves out are removed, the result is
validated and params.yaml is rewritten in place, atomically, with its comments and key order
(ruamel.yaml's round trip). A removed entry takes its own comments with it; a comment block
heading a group of entries (``# Segment Anything ...``) stays while an entry of its group does.
The new text is parsed back and must give exactly the merged params before it replaces the old
file: DVC's own ``-S '~key'`` once wrote an unparsable params.yaml when it removed the last
commented entry of a section. ``git checkout params.yaml`` returns to the defaults.

Unlike ``segbench experiment`` (one ``dvc exp run -S`` per leaf, params.yaml untouched), a study
removes entries, so it edits the file and leaves the run to ``dvc exp run --name <name>``.

Two levels of checks, decided by what the problem depends on:

- the params themselves (:func:`segbench.config.parse_params`, every key by its dotted name, and
  the encoder names): an error, exit 2, nothing printed or written;
- what this machine holds (:func:`segbench.check.check_params`: checkpoint and weight files,
  ``data.path``, GPUs): ``warning:`` lines on stderr, with ``--dry-run`` and when writing alike.
  A study is often prepared where the SAM checkpoint or the dataset is not there yet; the
  pipeline's ``check`` stage refuses the same problems where ``dvc repro`` runs, before any
  output is deleted.

``--dry-run`` prints the params.yaml it would write (stdout stays valid YAML: the changed keys
follow as comments) and writes nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from segbench.commands import parser_for
from segbench.errors import SegbenchError, exit_on_user_error

NAME, HELP = "study", "make params.yaml a study's configuration (configs/study-*.yaml)"

STUDY_KEYS = ("name", "keep")
_EXP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # what `dvc exp run --name` accepts


def add_arguments(parser) -> None:
    parser.add_argument("study", metavar="FILE", help="e.g. configs/study-lora-sam-particles.yaml")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the params.yaml it would write and the keys that change; write nothing",
    )


@dataclass(frozen=True)
class Study:
    """A study file: ``name`` and ``keep`` of its ``study:`` section, and the params keys."""

    name: str
    keep: tuple[str, ...] | None
    overrides: dict[str, Any]


def read_study(path: str | Path) -> Study:
    """Read and check the shape of a study file (not yet its params keys)."""
    from segbench.config import Params, load_raw

    path = Path(path)
    if not path.is_file():
        raise SegbenchError(f"{path}: no such study file (the shipped ones: configs/study-*.yaml)")
    text = path.read_text(encoding="utf-8")
    if all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()):
        raise SegbenchError(f"{path}: empty; a study file holds a study: section and params keys")
    raw = load_raw(path)
    if not isinstance(raw, dict):
        raise SegbenchError(
            f"{path}: expected a mapping of params sections and a study: section, got "
            f"{type(raw).__name__} {raw!r:.60}"
        )
    sections = list(Params.model_fields)
    unknown = [str(k) for k in raw if k != "study" and k not in sections]
    if unknown:
        raise SegbenchError(
            f"{path}: unknown top-level section{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
            f"a study file holds sections of params.yaml ({', '.join(sections)}) and study"
        )
    block = raw.get("study")
    if not isinstance(block, dict):
        raise SegbenchError(f"{path}: study: missing; add `study: {{name: <name>, keep: null}}`")
    extra = [str(k) for k in block if k not in STUDY_KEYS]
    if extra:
        raise SegbenchError(f"{path}: study.{extra[0]}: unknown key; valid: name, keep")
    name = block.get("name")
    if not isinstance(name, str) or not _EXP_NAME.fullmatch(name):
        raise SegbenchError(
            f"{path}: study.name: a DVC experiment name (letters, digits, '.', '_', '-'), "
            f"got {name!r}"
        )
    keep = block.get("keep")
    if keep is not None and not (
        isinstance(keep, list) and keep and all(isinstance(k, str) for k in keep)
    ):
        raise SegbenchError(
            f"{path}: study.keep: a list of models/ensembles entry names, or null to keep "
            f"them all; got {keep!r}"
        )
    overrides = {k: v for k, v in raw.items() if k != "study"}
    return Study(name, None if keep is None else tuple(keep), overrides)


def apply_keep(params: dict, keep: tuple[str, ...], source: str) -> dict:
    """``params`` with only the ``models``/``ensembles`` entries named in ``keep``; an unknown
    name, or an ensemble kept without its members, is an error naming ``source``."""
    models, ensembles = params.get("models"), params.get("ensembles")
    models = models if isinstance(models, dict) else {}
    ensembles = ensembles if isinstance(ensembles, dict) else {}
    unknown = [k for k in keep if k not in models and k not in ensembles]
    if unknown:
        raise SegbenchError(
            f"{source}: study.keep: {', '.join(unknown)}: not an entry of models or ensembles; "
            f"valid: {', '.join([*models, *ensembles])}"
        )
    for name in keep:
        members = (ensembles.get(name) or {}).get("members") or []
        dropped = [m for m in members if m not in keep]
        if dropped:
            raise SegbenchError(
                f"{source}: study.keep: the ensemble {name} averages {', '.join(dropped)}, which "
                f"keep removes; keep {'them' if len(dropped) > 1 else 'it'} too, or drop {name}"
            )
    out = dict(params)
    out["models"] = {k: v for k, v in models.items() if k in keep}
    if "ensembles" in params and isinstance(params["ensembles"], dict):
        out["ensembles"] = {k: v for k, v in ensembles.items() if k in keep}
    return out


def merge_study(base: dict, study: Study, source: str) -> dict:
    """The params a study runs with: ``base`` merged with its keys, then ``keep`` applied."""
    from segbench.config.params import merge_raw

    merged = merge_raw(base, study.overrides)
    return merged if study.keep is None else apply_keep(merged, study.keep, source)


def validate(merged: dict, source: str) -> list[str]:
    """Raise :class:`SegbenchError` if ``merged`` is not valid params; return the problems
    that depend on this machine (missing files, GPUs) as one warning line, if any."""
    from segbench.config import parse_params

    params = parse_params(merged, source=source)
    from segbench.check import check_params  # smp, timm, torch: only for valid params
    from segbench.models.smp_models import check_encoder_name

    for name, entry in params.models.items():
        if hasattr(entry, "encoder_name"):
            try:
                check_encoder_name(entry.encoder_name, key=f"models.{name}.encoder_name")
            except SegbenchError as exc:
                raise SegbenchError(f"{source}: {exc}") from None
    # check_params prints the entries skipped on this data; stdout is the params text here.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            check_params(params, source=source)
        except SegbenchError as exc:
            return [f"{exc} (`dvc repro` stops at its check stage until this is fixed)"]
    return []


def _flow(value: Any) -> str:
    """``value`` as one line of YAML flow style."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.removesuffix("...\n").strip()


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``dotted.key: old -> new`` (or ``added ...``, ``removed``) for each leaf that differs;
    a mapping in both is compared key by key, anything else whole (1 and 1.0 differ)."""
    lines = []
    for key in [*old, *(k for k in new if k not in old)]:
        dotted = f"{prefix}{key}"
        if key not in new:
            lines.append(f"{dotted}: removed")
        elif key not in old:
            lines.append(f"{dotted}: added {_short(new[key])}")
        elif isinstance(old[key], dict) and isinstance(new[key], dict):
            lines += changed_keys(old[key], new[key], f"{dotted}.")
        elif _flow(old[key]) != _flow(new[key]):
            lines.append(f"{dotted}: {_short(old[key])} -> {_short(new[key])}")
    return lines


def _short(value: Any, width: int = 100) -> str:
    text = _flow(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def run(args) -> None:
    from segbench.config import load_raw

    study = read_study(args.study)
    source = f"{args.params} + {args.study}"
    base = load_raw(args.params)
    merged = merge_study(base, study, source)
    warnings = validate(merged, source)
    old_text = Path(args.params).read_text(encoding="utf-8")
    text = render(old_text, base, merged, source=args.params)
    changes = changed_keys(base, merged)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if args.dry_run:
        print(text, end="")
        print(f"# segbench study --dry-run {args.study}: {len(changes)} key(s) change")
        print("".join(f"#   {line}\n" for line in changes), end="")
        return
    if text != old_text:
        write_atomic(Path(args.params), text)
        print(f"study {study.name}: wrote {args.params} ({len(changes)} key(s) changed)")
    else:
        print(f"study {study.name}: {args.params} already holds it (no key changes)")
    print("".join(f"  {line}\n" for line in changes), end="")
    print(
        f"next: dvc exp run --name {study.name}    (git checkout {args.params}: back to defaults)"
    )


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


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))


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
        elif key in new and _flow(old[key]) != _flow(new[key]):
            _replace(doc, key, new[key])
    for key in new:
        if key not in doc:
            doc[key] = _node(new[key])
    out = io.StringIO()
    rt.dump(doc, out)
    result = out.getvalue()
    if _flow(yaml.safe_load(result)) != _flow(new):  # type-exact: 1 and 1.0 differ
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
        if k not in new or _flow(old[k]) == _flow(new[k]):
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
