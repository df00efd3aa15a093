"""`coord setup`: a playbook of checks and idempotent steps, run on each machine over SSH.

A setup playbook (``playbooks/setup-machine.yml`` is the one coordlib ships) is a list of
steps.  Each has a `check` (shell; exit 0: satisfied already), and may have a `run` (shell
that makes it so, safe to run twice) and `manual` text (what a person must do when the
check fails and nothing can be run).  A step may be made once per repo the machine works on
(``each: repo``), be off unless asked for (``enabled: false``; `--enable NAME`), or be
satisfied by a variable the machine's env names (``ok_if_env``).

Placeholders ``{machine}``, ``{host}``, ``{user}``, ``{workdir}``, ``{claude}``, the
playbook's own `vars`, and in a per-repo step ``{repo}``, ``{path}``, ``{url}`` and
``{branch}`` are replaced here: in commands each value is quoted for the shell (a path's
leading ``~/`` becomes ``"$HOME"/``), in names and manual text it is shown as it is.
``${VAR}`` is the shell's own; ``{{x}}`` is a literal ``{x}``.  An unknown placeholder, key
or value is a `ConfigError` naming the playbook's file and line.

All of a machine's steps go in one remote command (machine.sh's setup); nothing a machine
answers is ever run.  The commands are the user's own config, trusted as a test command is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .config import suggest
from .config_nodes import Doc, Fields, text_of
from .doctor import machine_repos
from .errors import CommandError, ConfigError, CoordError, UsageError
from .runtime.answers import failure_reason
from .runtime.builders import setup_command
from .runtime.command import join, quote
from .runtime.machine_answers import StepAnswer, parse_setup

if TYPE_CHECKING:
    from .config import Config, MachineConfig, RepoConfig
    from .context import Context

__all__ = [
    "DEFAULT_SETUP_PLAYBOOK",
    "MachineSetup",
    "PlannedStep",
    "SetupPlaybook",
    "SetupReport",
    "StepResult",
    "StepSpec",
    "load_setup_playbook",
    "parse_setup_playbook",
    "plan_steps",
    "repo_url",
    "setup_machines",
]

DEFAULT_SETUP_PLAYBOOK = Path(__file__).parent / "playbooks" / "setup-machine.yml"
STEP_TIMEOUT = 600.0
# A step's end: the machine's answers (runtime.protocol.SETUP_STATES), and "skipped" (off).
DONE_STATES = ("ok", "changed", "skipped")

_TOP_KEYS = ("name", "vars", "steps")
_STEP_KEYS = ("name", "check", "run", "manual", "each", "enabled", "timeout", "ok_if_env")
_STEP_DEFAULTS: Mapping[str, Any] = {"enabled": True, "timeout": STEP_TIMEOUT}
_MACHINE_VALUES = ("machine", "host", "user", "workdir", "claude")
_REPO_VALUES = ("repo", "path", "url", "branch")
_PATHS = ("workdir", "path")
# {name} not after a "$" (${VAR} is the shell's), or {{name}}: a literal {name}
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_]\w*)\}\}|(?<!\$)\{([A-Za-z_]\w*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_]\w{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class StepSpec:
    """One step as the playbook writes it (its texts still hold their placeholders)."""

    name: str
    check: str
    run: str | None = None
    manual: str | None = None
    each: str | None = None  # "repo": made once per repo of the machine
    enabled: bool = True
    timeout: float = STEP_TIMEOUT  # for each of its commands
    ok_if_env: tuple[str, ...] = ()
    line: int = 0

    @property
    def handle(self) -> str:
        """The name `--enable` knows it by: lowercase, spaces as '-'."""
        return re.sub(r"\s+", "-", self.name.strip().lower())


@dataclass(frozen=True)
class SetupPlaybook:
    """A setup playbook: its steps in order, and the values its placeholders may use."""

    name: str
    path: Path | None
    vars: Mapping[str, str]
    steps: tuple[StepSpec, ...]


@dataclass(frozen=True)
class PlannedStep:
    """A step made for one machine: its commands, values quoted in; `decided` when its end
    is known without asking the machine ((state, detail): off, or satisfied by the env)."""

    name: str
    check: str
    run: str | None
    manual: str | None
    timeout: float
    decided: tuple[str, str] | None = None


@dataclass(frozen=True)
class StepResult:
    """What became of one step on one machine."""

    name: str
    state: str  # ok, changed, would_change, failed, manual (for a person to do) or skipped
    detail: str = ""
    manual: str | None = None  # what a person must do, when the step is theirs

    def to_dict(self) -> dict[str, Any]:
        """Return the step as ``coord setup --json`` prints it."""
        return dataclasses.asdict(self)


@dataclass
class MachineSetup:
    """One machine's setup: each step's end, or why it could not be set up at all."""

    name: str
    steps: list[StepResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ready(self) -> bool:
        """Whether every step is satisfied now (a dry run's would-be changes are not)."""
        return self.error is None and all(s.state in DONE_STATES for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        """Return the machine's setup as ``coord setup --json`` prints it."""
        return {"name": self.name, "ready": self.ready, "error": self.error,
                "steps": [s.to_dict() for s in self.steps]}  # fmt: skip


@dataclass
class SetupReport:
    """A setup of some machines with one playbook."""

    playbook: str
    dry_run: bool
    machines: list[MachineSetup]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as ``coord setup --json`` prints it."""
        return {"playbook": self.playbook, "dry_run": self.dry_run,
                "machines": [m.to_dict() for m in self.machines]}  # fmt: skip


# ------------------------------------------------------------------ reading a playbook


def load_setup_playbook(path: str | os.PathLike[str] | None = None) -> SetupPlaybook:
    """Read and check the setup playbook at `path`; None reads the shipped one."""
    where = DEFAULT_SETUP_PLAYBOOK if path is None else Path(path)
    try:
        data = where.read_bytes()
    except OSError as exc:
        hint = f"give the path of a playbook, or start from a copy of {DEFAULT_SETUP_PLAYBOOK}"
        raise ConfigError(f"cannot read the playbook: {exc.strerror}", path=str(where),
                          hint=hint) from exc  # fmt: skip
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text: byte {data[exc.start]:#04x} cannot be read", path=str(where),
            line=data.count(b"\n", 0, exc.start) + 1, hint="save the file as UTF-8",
        ) from exc  # fmt: skip
    return dataclasses.replace(parse_setup_playbook(text, str(where)), path=where)


def parse_setup_playbook(text: str, label: str = "<setup playbook>") -> SetupPlaybook:
    """Read and check a setup playbook from YAML `text`; `label` names it in errors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = "; ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"YAML syntax error: {problem}", path=label,
                          line=mark.line + 1 if mark else None,
                          hint="check the indentation and quoting on that line and the one "
                          "before") from exc  # fmt: skip
    except yaml.YAMLError as exc:  # a character YAML does not allow
        raise ConfigError(f"YAML error: {exc}", path=label, hint="remove it") from exc
    if root is None:
        raise ConfigError("the playbook is empty", path=label, line=1,
                          hint=f"start from a copy of {DEFAULT_SETUP_PLAYBOOK}")  # fmt: skip
    doc = Doc(label)
    top = Fields(doc, root, "", _TOP_KEYS, "setup playbook keys", {"name": "setup"})
    name = top.text("name")
    values: dict[str, str] = {}
    for var, value, key_node, _, key in top.text_map("vars", "variable → value"):
        if not _VAR_NAME.fullmatch(var) or var in (*_MACHINE_VALUES, *_REPO_VALUES):
            taken = ", ".join((*_MACHINE_VALUES, *_REPO_VALUES))
            hint = f"use letters, digits and '_', and none of the names coord fills in: {taken}"
            raise doc.error(key_node, key, f"{var!r} cannot name a variable", hint)
        values[var] = value
    node = top.get("steps")
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        hint = "add `steps:`, a list of steps each with a name and a check"
        raise doc.error(top.at("steps"), "steps", "missing, or not a list of steps", hint)
    steps: list[StepSpec] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(node.value):
        step = _read_step(doc, item, f"steps[{i}]", values)
        if step.handle in seen:
            said = f"{step.name!r} is the name of the step on line {seen[step.handle]} too"
            raise doc.error(item, f"steps[{i}].name", said, hint="name each step its own way")
        seen[step.handle] = step.line
        steps.append(step)
    return SetupPlaybook(name, None, values, tuple(steps))


def _read_step(doc: Doc, node: yaml.Node, key: str, values: Mapping[str, str]) -> StepSpec:
    f = Fields(doc, node, key, _STEP_KEYS, "step keys", _STEP_DEFAULTS)
    each = f.optional_text("each")
    if each is not None and each != "repo":
        raise doc.error(f.at("each"), f.path("each"), f"{each!r} is nothing a step repeats for",
                        hint="write `each: repo`, or leave it out")  # fmt: skip
    known = (*_MACHINE_VALUES, *values, *(_REPO_VALUES if each else ()))
    texts: dict[str, str | None] = {}
    for part in ("name", "check", "run", "manual"):
        text = f.required_text(part, "step") if part in ("name", "check") else f.optional_text(part)
        if text is not None:
            _check_placeholders(doc, f, part, text, known, bool(each))
            if part in ("name", "check") and not text.strip():
                raise doc.error(f.at(part), f.path(part), "empty", hint=f"write the step's {part}")
        texts[part] = text
    return StepSpec(
        name=str(texts["name"]).strip(), check=str(texts["check"]), run=texts["run"] or None,
        manual=texts["manual"] or None, each=each, enabled=f.boolean("enabled"),
        timeout=f.duration("timeout"), ok_if_env=_env_names(f),
        line=node.start_mark.line + 1,
    )  # fmt: skip


def _check_placeholders(
    doc: Doc, f: Fields, part: str, text: str, known: Sequence[str], per_repo: bool
) -> None:
    for m in _PLACEHOLDER.finditer(text):
        name = m.group(2)
        if name is None or name in known:
            continue
        if name in _REPO_VALUES and not per_repo:
            hint = f"{{{name}}} is a repo's: add `each: repo` to make the step once per repo"
        else:
            hint = suggest(name, list(known), "placeholders here") + (
                "; write {{" + name + "}} for a literal {" + name + "}"
            )
        raise doc.error(f.at(part), f.path(part), f"unknown placeholder {{{name}}}", hint)


def _env_names(f: Fields) -> tuple[str, ...]:
    node = f.get("ok_if_env")
    if node is None:
        return ()
    items: list[tuple[str, yaml.Node, str]]
    if isinstance(node, yaml.ScalarNode):
        items = [(text_of(f.doc, node, f.path("ok_if_env")), node, f.path("ok_if_env"))]
    else:
        items = f.texts("ok_if_env", "variable names")
    for name, item, key in items:
        if not _ENV_NAME.fullmatch(name):
            raise f.doc.error(item, key, f"{name!r} is not an environment variable's name")
    return tuple(name for name, _, _ in items)


# ------------------------------------------------------------------ a machine's steps


def repo_url(r: RepoConfig) -> str | None:
    """Where `r` is cloned from: its `url`, else its GitHub URL when GitHub is its forge."""
    if r.url:
        return r.url
    if r.github and (r.forge or "github") == "github":
        return f"https://github.com/{r.github}.git"
    return None


def _quote_path(path: str) -> str:
    """Quote a path for the shell, its leading ``~`` or ``~/`` as the machine's home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"/' + (quote(rest) if rest else "")
    return quote(path)


def _render(text: str, values: Mapping[str, str], *, shell: bool) -> str:
    """Put `values` into `text`'s placeholders: quoted for the shell when `shell`."""

    def value(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return "{" + m.group(1) + "}"
        name, raw = m.group(2), values[m.group(2)]
        if not shell:
            return raw
        if name == "claude":
            return raw  # a command, already quoted word by word
        return _quote_path(raw) if name in _PATHS else quote(raw)

    return _PLACEHOLDER.sub(value, text)


def plan_steps(
    playbook: SetupPlaybook, config: Config, m: MachineConfig, *, enable: Sequence[str] = ()
) -> list[PlannedStep]:
    """Make the playbook's steps for machine `m`, in order (each per-repo step once per repo).

    `enable` names steps that are off (``enabled: false``) to run anyway; an unknown one is
    a `UsageError` listing those that are off.
    """
    wanted = {re.sub(r"\s+", "-", e.strip().lower()) for e in enable}
    off = [s.handle for s in playbook.steps if not s.enabled]
    unknown = sorted(wanted - {s.handle for s in playbook.steps})
    if unknown:
        raise UsageError(f"--enable {unknown[0]}: the playbook has no such step (steps that "
                         f"are off: {', '.join(off) or 'none'})")  # fmt: skip
    base = {**playbook.vars, "machine": m.name, "host": m.host, "user": m.user or "",
            "workdir": m.root}  # fmt: skip
    planned: list[PlannedStep] = []
    for spec in playbook.steps:
        for values, no_url in _instances(spec, config, m, base):
            planned.append(_plan_one(spec, values, m, no_url=no_url,
                                     on=spec.enabled or spec.handle in wanted))  # fmt: skip
    return planned


def _instances(
    spec: StepSpec, config: Config, m: MachineConfig, base: Mapping[str, str]
) -> Iterator[tuple[dict[str, str], bool]]:
    if spec.each != "repo":
        yield dict(base), False
        return
    for name in machine_repos(config, m):
        r = config.repo(name)
        url = repo_url(r)
        yield ({**base, "repo": r.name, "path": m.repo_path(r.name), "url": url or "",
                "branch": r.default_branch}, url is None)  # fmt: skip


def _plan_one(
    spec: StepSpec, values: dict[str, str], m: MachineConfig, *, no_url: bool, on: bool
) -> PlannedStep:
    shown = {**values, "claude": m.claude_command}
    name = _render(spec.name, shown, shell=False)
    manual = _render(spec.manual, shown, shell=False) if spec.manual else None
    sent = {**values, "claude": join(m.claude_argv()) if m.claude_argv() else "claude"}
    check = _render(spec.check, sent, shell=True)
    run = _render(spec.run, sent, shell=True) if spec.run else None
    decided: tuple[str, str] | None = None
    if run is not None and no_url and spec.run is not None and "{url}" in spec.run:
        run = None  # nothing to clone from: the person's to do, if the check fails
        manual = (f"give repo {values['repo']} a `url:` in coordinator.yml (where to clone it "
                  f"from), or clone it to {values['path']} on {m.name} yourself")  # fmt: skip
    if not on:
        decided = ("skipped", f"off (enabled: false); `coord setup {m.name} --enable "
                   f"{spec.handle}` runs it")  # fmt: skip
    else:
        named = next((v for v in spec.ok_if_env if v in m.env), None)
        if named is not None:
            decided = ("ok", f"{named} comes from machines.{m.name}.env in coordinator.yml "
                       f"(`coord doctor {m.name}` checks that it works)")  # fmt: skip
    return PlannedStep(name, check, run, manual, spec.timeout, decided)


# ------------------------------------------------------------------ running it


async def setup_machines(
    ctx: Context,
    names: Sequence[str],
    *,
    playbook: SetupPlaybook,
    dry_run: bool = False,
    enable: Sequence[str] = (),
    on_machine: Callable[[MachineSetup], None] | None = None,
) -> SetupReport:
    """Run `playbook` on each machine of `names` at once, one remote command each."""
    # Every machine's steps made (and so every name checked) before any machine is touched.
    plans = {n: plan_steps(playbook, ctx.config, ctx.config.machine(n), enable=enable)
             for n in names}  # fmt: skip

    async def one(name: str) -> MachineSetup:
        done = await _setup_one(ctx, name, plans[name], dry_run=dry_run)
        if on_machine is not None:
            on_machine(done)
        return done

    machines = list(await asyncio.gather(*(one(n) for n in names)))
    where = str(playbook.path) if playbook.path is not None else playbook.name
    return SetupReport(where, dry_run, machines)


async def _setup_one(
    ctx: Context, name: str, steps: Sequence[PlannedStep], *, dry_run: bool
) -> MachineSetup:
    sent = [s for s in steps if s.decided is None]
    answers: list[StepAnswer] = []
    if sent:
        argv, payload = setup_command([(s.check, s.run, s.timeout) for s in sent],
                                      dry_run=dry_run)  # fmt: skip
        # each step's check, run and check again, each within its timeout
        budget = sum(3 * s.timeout for s in sent) + 30.0
        try:
            result = await ctx.machines.get(name).run(argv, input=payload, timeout=budget,
                                                      what="setup")  # fmt: skip
            answers = parse_setup(result.stdout, len(sent), machine=name)
        except CommandError as exc:
            return MachineSetup(name, error=failure_reason(exc.stderr) or _own(exc, name))
        except CoordError as exc:
            return MachineSetup(name, error=_own(exc, name))
    said = iter(answers)
    return MachineSetup(name, [_result(s, s.decided or next(said)) for s in steps])


def _own(exc: CoordError, name: str) -> str:
    return str(exc).removeprefix(f"{name}: ")


def _result(step: PlannedStep, said: tuple[str, str] | StepAnswer) -> StepResult:
    if isinstance(said, tuple):
        return StepResult(step.name, said[0], said[1])
    last = said.last_line
    if said.state == "would_change":
        run = (step.run or "").strip().splitlines()
        return StepResult(step.name, "would_change", f"would run: {run[0][:160] if run else ''}")
    if said.state == "manual":
        if step.manual:
            return StepResult(step.name, "manual", last, step.manual)
        return StepResult(step.name, "failed", f"the check failed{': ' + last if last else ''}")
    if said.state == "failed":
        return StepResult(step.name, "failed", last or "the run failed", step.manual)
    return StepResult(step.name, said.state, last)
