"""Playbooks: the issue-to-PR pipeline's stages and the transitions between them, as data.

A playbook is a YAML file of stages.  Each stage runs one thing (a worker session, the
branch's build and tests, or pushing and opening the pull request) and maps every outcome
of it to the stage that comes next, or to an end: ``ready-to-merge`` or ``needs-human``.
The package ships ``issue-to-pr.yml`` (`DEFAULT_PLAYBOOK`); a user's copy is read and
checked the same way, every mistake a `ConfigError` naming file:line and the dotted key
(``stages.review.next.approve``).

Models are only checked for shape here: whether a tier exists is the config's business,
checked where a playbook meets one.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from .config import suggest
from .config_nodes import Doc, Fields, check_name, text_of
from .errors import ConfigError

__all__ = [
    "DEFAULT_PLAYBOOK",
    "ENDS",
    "MODEL_POLICIES",
    "NEEDS_HUMAN",
    "OUTCOMES",
    "READY",
    "RUN_KINDS",
    "VERDICT_OUTCOMES",
    "Playbook",
    "Stage",
    "load_playbook",
    "parse_playbook",
]

RUN_KINDS = ("worker", "test", "pr")
OUTCOMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        # empty: it said done and left no commit; uncommitted: it left changes uncommitted
        "worker": ("done", "failed", "empty", "uncommitted"),
        "test": ("passed", "failed"),
        "pr": ("opened",),
    }
)
# A worker stage with `verdict: true` ends in one of these (or failed) instead of done.
VERDICT_OUTCOMES = ("approve", "request-changes", "no-verdict")
READY = "ready-to-merge"
NEEDS_HUMAN = "needs-human"
ENDS = (READY, NEEDS_HUMAN)
# How a worker stage picks its model; anything else names a tier or a full model id.
MODEL_POLICIES = ("label", "escalate", "reviewer", "same")
DEFAULT_PLAYBOOK = Path(__file__).parent / "playbooks" / "issue-to-pr.yml"

# Outcomes a stage may leave out of `next`: nobody planned for them, so a person decides.
_OPTIONAL = ("failed", "no-verdict", "empty", "uncommitted")
_TOP_KEYS = ("name", "max_rounds", "start", "stages")
_STAGE_KEYS = ("run", "briefing", "model", "tools", "verdict", "round", "next")
_WORKER_ONLY = ("briefing", "model", "tools", "verdict", "round")
_STAGE_DEFAULTS = {"model": "label", "verdict": False, "round": False}
_TEMPLATE = re.compile(r"[A-Za-z0-9_-]+")
_TOOL = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\([^()\n]*\))?")
_MODEL = re.compile(r"[A-Za-z0-9._:/-]+")
_EXAMPLE_TOOLS = "[Read, Edit, Write, Bash, Glob, Grep]"
_TARGET_HINT = f"name a stage, {READY} or {NEEDS_HUMAN}"
# The fix to offer for a value of the wrong shape, by its key (under the stage for a stage's).
_TOP_HINTS = {
    "": f"a playbook maps name, max_rounds, start and stages; see {DEFAULT_PLAYBOOK}",
    "name": "name the playbook in plain text, e.g. `name: issue-to-pr`",
    "max_rounds": "give the number of fix rounds, e.g. `max_rounds: 3`",
    "start": "name the first stage, e.g. `start: work`",
    "stages": "map each stage's name to its keys, e.g. `work: {run: worker, …}`",
}
_STAGE_HINTS = {
    "": "give the stage its keys: run, next and, for a worker, briefing and tools",
    "run": f"write one of {', '.join(RUN_KINDS)}",
    "briefing": "name a template, e.g. `briefing: work`",
    "model": f"write a policy ({', '.join(MODEL_POLICIES)}), a tier or a model id",
    "tools": f"write a list, e.g. `tools: {_EXAMPLE_TOOLS}`",
    "verdict": "write true or false",
    "round": "write true or false",
    "next": "map each outcome to a stage or an end, e.g. `next: {done: test}`",
}


def _outcomes(run: str, verdict: bool) -> tuple[str, ...]:
    return (*VERDICT_OUTCOMES, "failed") if verdict else OUTCOMES[run]


def _kind(run: str, verdict: bool) -> str:
    return "worker stage with verdict: true" if verdict else f"{run} stage"


@dataclass(frozen=True)
class Stage:
    """One step of a playbook: what runs, and where each of its outcomes leads."""

    name: str
    run: str  # one of RUN_KINDS
    briefing: str | None = None  # worker stages: the template's name
    model: str = "label"  # one of MODEL_POLICIES, a tier or a model id
    tools: tuple[str, ...] = ()  # worker stages: the Claude Code tools allowed
    verdict: bool = False  # the session must end with a VERDICT: line
    round: bool = False  # entering the stage starts the next fix round
    next: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    line: int = field(default=0, compare=False)  # where it is declared, for messages

    def outcomes(self) -> tuple[str, ...]:
        """Return the outcomes this stage can end with."""
        return _outcomes(self.run, self.verdict)

    def to_dict(self) -> dict[str, Any]:
        """Return the stage as a playbook writes it, every default spelled out."""
        data: dict[str, Any] = {"run": self.run}
        if self.run == "worker":
            data.update(briefing=self.briefing, model=self.model, tools=list(self.tools))
            data.update(verdict=self.verdict, round=self.round)
        data["next"] = dict(self.next)
        return data


@dataclass(frozen=True)
class Playbook:
    """A pipeline: its stages, the one an issue starts in, and the cap on fix rounds."""

    name: str
    path: Path | None = field(compare=False)  # None: parsed from text
    max_rounds: int
    start: str
    stages: Mapping[str, Stage] = field(hash=False)  # in the order the file declares them

    def _error(self, message: str, key: str, hint: str, line: int = 0) -> ConfigError:
        return ConfigError(
            f"playbook {self.name!r}: {message}",
            path=str(self.path) if self.path is not None else None,
            line=line or None,
            key=key,
            hint=hint,
        )

    def stage(self, name: str) -> Stage:
        """Return the stage called `name`."""
        found = self.stages.get(name)
        if found is None:
            hint = suggest(name, list(self.stages), "its stages")
            raise self._error(f"no stage {name!r}", f"stages.{name}", hint)
        return found

    def after(self, stage: str, outcome: str) -> str:
        """Return where `stage` ending with `outcome` leads: a stage's name or one of ENDS."""
        current = self.stage(stage)
        target = current.next.get(outcome)
        if target is None:
            kind = _kind(current.run, current.verdict)
            raise self._error(
                f"stage {stage!r} has no outcome {outcome!r}",
                f"stages.{stage}.next",
                suggest(outcome, current.outcomes(), f"outcomes of a {kind}"),
                current.line,
            )
        return target

    def to_dict(self) -> dict[str, Any]:
        """Return the playbook as JSON-ready data that reads back as the same playbook."""
        return {
            "name": self.name,
            "max_rounds": self.max_rounds,
            "start": self.start,
            "stages": {name: stage.to_dict() for name, stage in self.stages.items()},
        }


def load_playbook(path: str | os.PathLike[str] | None = None) -> Playbook:
    """Read and check the playbook at `path`; None reads the shipped issue-to-pr.yml."""
    where = DEFAULT_PLAYBOOK if path is None else Path(path)
    try:
        data = where.read_bytes()
    except FileNotFoundError as exc:
        hint = f"give the path of a playbook, or copy {DEFAULT_PLAYBOOK} there"
        raise ConfigError("no playbook here", path=str(where), hint=hint) from exc
    except OSError as exc:
        hint = "check the path and its permissions"
        raise ConfigError(
            f"cannot read the playbook: {exc.strerror}", path=str(where), hint=hint
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text: byte {data[exc.start]:#04x} cannot be read",
            path=str(where),
            line=data.count(b"\n", 0, exc.start) + 1,
            hint="save the file as UTF-8",
        ) from exc
    return dataclasses.replace(parse_playbook(text, str(where)), path=where)


def parse_playbook(text: str, label: str = "<playbook>") -> Playbook:
    """Read and check a playbook from YAML `text`; `label` names it in errors."""
    root = _compose(text, label)
    if root is None:
        hint = f"start from a copy of {DEFAULT_PLAYBOOK}"
        raise ConfigError("the playbook is empty", path=label, line=1, hint=hint)
    with _fixes(_TOP_HINTS, ""):
        return _read_playbook(Doc(label), root)


def _read_playbook(doc: Doc, root: yaml.Node) -> Playbook:
    top = Fields(doc, root, "", _TOP_KEYS, "playbook keys", {"max_rounds": 3})
    name = check_name(doc, top.required_text("name", "playbook"), top.at("name"), "name")
    max_rounds = top.integer("max_rounds", 1)
    start = top.required_text("start", "playbook")
    stages_node = top.get("stages")
    if stages_node is None:
        hint = "add `stages:`, a mapping of stage name → run, next, …"
        raise doc.error(top.at("stages"), "stages", "missing; every playbook needs one", hint)
    by_name = Fields(doc, stages_node, "stages", None, "stages (name → run, next, …)")
    if not by_name.values:
        hint = f"add a worker stage and a pr stage, as in {DEFAULT_PLAYBOOK}"
        raise doc.error(stages_node, "stages", "no stages", hint)
    names = list(by_name.values)
    for stage_name in names:  # all before any stage is read: `next:` may name a later one
        key_node = by_name.key_nodes[stage_name]
        check_name(doc, stage_name, key_node, f"stages.{stage_name}")
        if stage_name in ENDS:
            raise doc.error(
                key_node,
                f"stages.{stage_name}",
                f"{stage_name!r} is an end of the pipeline, not a stage",
                hint=f"rename the stage; `next:` reaches {READY} and {NEEDS_HUMAN} as they are",
            )
    stages: dict[str, Stage] = {}
    for stage_name in names:
        with _fixes(_STAGE_HINTS, f"stages.{stage_name}"):
            stages[stage_name] = _read_stage(doc, by_name, stage_name, names)
    if start not in stages:
        hint = suggest(start, names, "stages")
        raise doc.error(top.at("start"), "start", f"unknown stage {start!r}", hint)
    reached = _reachable(stages, start)
    for stage_name in names:
        if stage_name not in reached:
            raise doc.error(
                by_name.key_nodes[stage_name],
                f"stages.{stage_name}",
                f"not reachable from start {start!r}: no outcome leads to it",
                hint=f"point an outcome of another stage at {stage_name!r}, or remove it",
            )
    if READY not in reached:
        raise doc.error(
            top.key_nodes["stages"],
            "stages",
            f"no outcome leads to {READY}, so no issue could ever be done",
            hint=f"send an outcome to {READY}, e.g. `next: {{opened: {READY}}}` on the pr stage",
        )
    return Playbook(name, None, max_rounds, start, MappingProxyType(stages))


def _compose(text: str, label: str) -> yaml.Node | None:
    """Return the YAML's root node, every node knowing its line; syntax errors name one."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = "; ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(
            f"YAML syntax error: {problem}",
            path=label,
            line=mark.line + 1 if mark else None,
            hint="check the indentation and quoting on that line and the one before",
        ) from exc
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        hint = "remove the control character"
        raise ConfigError(f"YAML error: {exc}", path=label, line=line, hint=hint) from exc


@contextmanager
def _fixes(hints: Mapping[str, str], prefix: str) -> Iterator[None]:
    """Give an error raised inside that offers no fix the one `hints` has for its key."""
    try:
        yield
    except ConfigError as exc:
        key = exc.key or ""
        if prefix and key != prefix and not key.startswith(prefix + "."):
            raise
        hint = hints.get(re.sub(r"\[\d+\]", "", key[len(prefix) :].lstrip(".")))
        if exc.hint is not None or hint is None:
            raise
        raise ConfigError(
            exc.message, path=exc.path, line=exc.line, key=exc.key, hint=hint
        ) from exc


def _read_stage(doc: Doc, by_name: Fields, name: str, names: list[str]) -> Stage:
    line = by_name.key_nodes[name].start_mark.line + 1
    key = f"stages.{name}"
    f = Fields(doc, by_name.values[name], key, _STAGE_KEYS, "stage keys", _STAGE_DEFAULTS)
    run = f.required_text("run", "stage")
    if run not in RUN_KINDS:
        hint = suggest(run, RUN_KINDS, "kinds")
        raise doc.error(f.at("run"), f.path("run"), f"unknown kind {run!r}", hint)
    if run != "worker":
        for only in _WORKER_ONLY:
            if only in f.values:
                raise doc.error(
                    f.key_nodes[only],
                    f.path(only),
                    f"only worker stages take {only}; this one runs {run}",
                    hint=f"remove `{only}:`, or make it `run: worker`",
                )
        return Stage(name, run, next=_read_next(f, run, False, names), line=line)
    briefing = f.required_text("briefing", "worker stage")
    if not _TEMPLATE.fullmatch(briefing):
        hint = "as `work` names briefings/work.md.j2: only letters, digits, '_' and '-'"
        bad = f"{briefing!r} is not a template's name"
        raise doc.error(f.at("briefing"), f.path("briefing"), bad, hint)
    model = f.text("model")
    if not _MODEL.fullmatch(model):
        hint = f"give a policy ({', '.join(MODEL_POLICIES)}), a tier such as opus, or a model id"
        raise doc.error(f.at("model"), f.path("model"), f"{model!r} is not a model", hint)
    verdict, round_ = f.boolean("verdict"), f.boolean("round")
    return Stage(
        name,
        run,
        briefing=briefing,
        model=model,
        tools=_read_tools(f),
        verdict=verdict,
        round=round_,
        next=_read_next(f, run, verdict, names),
        line=line,
    )


def _read_tools(f: Fields) -> tuple[str, ...]:
    key = f.path("tools")
    if f.get("tools") is None:
        hint = f"add e.g. `tools: {_EXAMPLE_TOOLS}`"
        raise f.doc.error(f.node, key, "missing; every worker stage needs its tools", hint)
    items = f.texts("tools", "tool names")
    if not items:
        hint = f"list at least one, e.g. `tools: {_EXAMPLE_TOOLS}`"
        raise f.doc.error(f.at("tools"), key, "empty; a worker needs a tool", hint)
    seen: set[str] = set()
    for tool, node, item_key in items:
        if not _TOOL.fullmatch(tool):
            hint = "name a Claude Code tool such as Read, or a rule such as Bash(git diff:*)"
            raise f.doc.error(node, item_key, f"{tool!r} is not a tool name", hint)
        if tool in seen:
            raise f.doc.error(node, item_key, f"{tool!r} is listed twice", hint="keep one")
        seen.add(tool)
    return tuple(tool for tool, _, _ in items)


def _read_next(f: Fields, run: str, verdict: bool, names: list[str]) -> Mapping[str, str]:
    doc, key, node = f.doc, f.path("next"), f.get("next")
    outcomes = _outcomes(run, verdict)
    required = [o for o in outcomes if o not in _OPTIONAL]
    example = ", ".join(f"{o}: <stage>" for o in required)
    if node is None:
        hint = f"add `next: {{{example}}}`"
        raise doc.error(f.node, key, "missing; every stage needs one", hint)
    given = Fields(doc, node, key, None, "outcome → stage")
    targets: dict[str, str] = {}
    for outcome, value, path in given.items():
        if outcome not in outcomes:
            hint = suggest(outcome, outcomes, f"outcomes of a {_kind(run, verdict)}")
            raise doc.error(
                given.key_nodes[outcome], path, f"{outcome!r} is not an outcome here", hint
            )
        with _fixes({"": _TARGET_HINT}, path):
            target = text_of(doc, value, path)
        if target not in names and target not in ENDS:
            hint = suggest(target, [*names, *ENDS], "stages and ends")
            raise doc.error(value, path, f"unknown stage {target!r}", hint)
        targets[outcome] = target
    missing = [o for o in required if o not in targets]
    if missing:
        listed = ", ".join(missing)
        hint = f"add `{missing[0]}: <stage, {READY} or {NEEDS_HUMAN}>`"
        raise doc.error(node, key, f"says nowhere to go after {listed}", hint)
    return MappingProxyType({o: targets.get(o, NEEDS_HUMAN) for o in outcomes})


def _reachable(stages: Mapping[str, Stage], start: str) -> set[str]:
    """Return every stage and end some path of outcomes leads to from `start`."""
    reached, todo = {start}, [start]
    while todo:
        stage = stages.get(todo.pop())
        for target in stage.next.values() if stage is not None else ():
            if target not in reached:
                reached.add(target)
                todo.append(target)
    return reached
