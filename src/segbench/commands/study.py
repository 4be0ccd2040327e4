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
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segbench.commands import parser_for
from segbench.errors import SegbenchError, exit_on_user_error
from segbench.yamledit import flow, render, write_atomic

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
        elif flow(old[key]) != flow(new[key]):
            lines.append(f"{dotted}: {_short(old[key])} -> {_short(new[key])}")
    return lines


def _short(value: Any, width: int = 100) -> str:
    text = flow(value)
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


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run(parser_for(NAME, HELP, add_arguments).parse_args(argv))
