"""`coord merge` on the local forge: real git stacks, real test runs on the stacked commit,
and a land that only ever pushes the tested commit.  Issues reach ready-to-merge through the
real pipeline first (the stand-in worker and reviewers of tests/test_pipeline.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coordlib.merge.runner import order_repos

from .conftest import Setup
from .test_pipeline import arun, coordinator, drive, forge_of, new_issue, pipeline_setup

# Each PR adds one feature file; more than two of them together break the tests, so each PR
# passes alone and a stack of three is red: a breaker only the merge queue can find.
LIMIT_TEST = "test $(ls feature-*.txt 2>/dev/null | wc -l) -le 2"


def ready(setup: Setup, machine: str, names: list[str], *, test: str = LIMIT_TEST) -> list[int]:
    """Take one issue per feature file through the pipeline to ready-to-merge."""
    cfg = setup.config_path.read_text()
    setup.config_path.write_text(cfg.replace(json.dumps(_current_test(cfg)), json.dumps(test)))

    async def go() -> list[int]:
        async with coordinator(setup) as c:
            ns = []
            for name in names:
                n = await new_issue(c, f"Add {name}. [fake:ok:{name}=hello]", title=f"Add {name}")
                await c.assign(machine, "api", n)
                ns.append(n)
            for n in ns:
                p = await drive(c, "api", n)
                assert p.stage == "ready-to-merge", p
            return ns

    return list(arun(go()))


def _current_test(cfg: str) -> str:
    line = next(x for x in cfg.splitlines() if "test_command:" in x)
    return str(json.loads(line.split("test_command:", 1)[1].strip()))


def origin_log(setup: Setup) -> list[str]:
    log = ["git", "-C", str(setup.repo.origin), "log", "--first-parent", "--format=%s", "main"]
    out = subprocess.run(log, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def push_unreviewed(setup: Setup, issue: int) -> None:
    """Push a commit to the issue's PR branch from outside, as someone would after review."""

    async def branch() -> str:
        async with coordinator(setup) as c:
            p = c.board.pipeline("api", issue)
            assert p is not None
            return p.branch

    name = arun(branch())
    clone = setup.root / "sneaky"
    subprocess.run(["git", "clone", "-q", "-b", name, str(setup.repo.origin), str(clone)],
                   check=True)  # fmt: skip
    (clone / "extra.txt").write_text("unreviewed\n")
    who = ["-c", "user.name=o", "-c", "user.email=o@x"]
    for args in (["add", "extra.txt"], [*who, "commit", "-qm", "sneak"], ["push", "-q"]):
        subprocess.run(["git", "-C", str(clone), *args], check=True)


def merge(setup: Setup, **kwargs: Any) -> Any:
    async def go() -> Any:
        async with coordinator(setup) as c:
            return await c.merge(**kwargs), c.pipelines()

    return arun(go())


def test_a_green_batch_lands_in_one_test_run(setup: Setup) -> None:
    merged = setup.root / "merged.jsonl"
    setup.extra["hooks"] = {"on_merge": [f"cat >> {merged}; echo >> {merged}"]}
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    ns = ready(setup, machine, ["feature-1.txt", "feature-2.txt"])
    report, pipelines = merge(setup)
    assert report.test_runs == 1 and not report.errors, report
    [batch] = report.batches
    # (in the order the PRs became ready, which need not be the issues')
    landed = [int(x["issue"].split("#")[1]) for x in batch["landed"]]
    assert sorted(landed) == sorted(ns)
    log = origin_log(setup)
    pr_of = {p.issue: p.pr for p in pipelines}
    assert [x.split(":")[0] for x in log] == [*(f"Merge PR #{pr_of[n]}" for n in reversed(landed)),
                                              "initial commit"]  # fmt: skip
    assert all(p.stage == "merged" and p.merged_sha for p in pipelines)

    async def forge_state() -> tuple[list[Any], list[Any]]:
        forge = forge_of(setup)
        prs = [await forge.get_pr(int(p.pr)) for p in pipelines if p.pr]
        return prs, [await forge.get_issue(n) for n in ns]

    events = [json.loads(x) for x in merged.read_text().splitlines() if x.strip()]
    assert sorted(e["issue"] for e in events) == sorted(ns)
    assert {e["event"] for e in events} == {"on_merge"} and events[0]["sha"]
    prs, issues = arun(forge_state())
    assert all(pr.merged and pr.merge_sha == batch["landed"][0]["sha"] for pr in prs)
    assert all(i.state == "closed" and "status:done" in i.labels for i in issues)
    assert all(any("merged PR #" in c.body and "tested there first" in c.body
                   for c in i.comments) for i in issues)  # fmt: skip


def test_a_red_batch_is_bisected_and_the_breaker_bounced(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    ns = ready(setup, machine, ["feature-1.txt", "feature-2.txt", "feature-3.txt"])
    report, pipelines = merge(setup)
    [batch] = report.batches
    # The stack is in the order the PRs became ready (three pipelines ran at once): whichever
    # is third breaks the tests (at most two feature files), and is the one bounced.
    landed = [int(x["issue"].split("#")[1]) for x in batch["landed"]]
    [breaker] = [int(x.split("#")[1]) for x in batch["bounced"]]
    assert len(landed) == 2 and sorted([*landed, breaker]) == sorted(ns)
    assert report.test_runs <= 3  # the stack of 3 (red), then the prefix of 2 (green)
    by_issue = {p.issue: p for p in pipelines}
    bounced = by_issue[breaker]
    assert bounced.stage == "fix" and "merge queue" in bounced.failures
    assert bounced.round == 1 and bounced.pr is not None
    # Only tested commits are on main: it holds exactly the two landed PRs.
    tree = ["git", "-C", str(setup.repo.origin), "ls-tree", "--name-only", "main"]
    files = subprocess.run(tree, capture_output=True, text=True, check=True).stdout.split()
    features = sorted(f for f in files if f.startswith("feature-"))
    assert features == sorted(f"feature-{ns.index(n) + 1}.txt" for n in landed)


def test_a_branch_that_moves_during_the_test_forces_a_retest(setup: Setup) -> None:
    # (Unconfined: the test command plays someone else pushing, outside its worktree.)
    setup.worker.update(confine=False)
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    ready(setup, machine, ["feature-1.txt"])
    # The next test run pushes a commit to origin's main from outside, once.
    flag = setup.root / "pushed-once"
    clone = setup.root / "outsider"
    subprocess.run(["git", "clone", "-q", str(setup.repo.origin), str(clone)], check=True)
    pusher = (f"if [ ! -e {flag} ]; then touch {flag} && cd {clone} && echo x > outside.txt && "
              f"git add outside.txt && git -c user.name=o -c user.email=o@x commit -qm outside "
              f"&& git push -q origin HEAD:main; fi; true")  # fmt: skip
    cfg = setup.config_path.read_text()
    setup.config_path.write_text(cfg.replace(json.dumps(LIMIT_TEST), json.dumps(pusher)))
    report, pipelines = merge(setup)
    [batch] = report.batches
    assert batch["restacks"] == 1 and report.test_runs == 2, batch
    assert origin_log(setup)[1] == "outside"  # stacked again on the moved branch
    assert pipelines[0].stage == "merged"


def test_a_conflict_sends_the_pr_to_a_conflict_worker(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    ns = ready(setup, machine, ["feature-1.txt"])
    # Main moves on with a different feature-1.txt: the PR no longer merges.
    clone = setup.root / "outsider"
    subprocess.run(["git", "clone", "-q", str(setup.repo.origin), str(clone)], check=True)
    (clone / "feature-1.txt").write_text("someone else's\n")
    who = ["-c", "user.name=o", "-c", "user.email=o@x"]
    for args in (["add", "feature-1.txt"], [*who, "commit", "-qm", "theirs"], ["push", "-q"]):
        subprocess.run(["git", "-C", str(clone), *args], check=True)
    report, pipelines = merge(setup)
    [batch] = report.batches
    assert batch["conflicts"] == [{"issue": f"api#{ns[0]}", "files": ["feature-1.txt"]}]
    assert report.test_runs == 0
    [p] = pipelines
    assert p.stage == "fix" and p.brief == "conflict" and p.conflicts == ["feature-1.txt"]

    async def next_pass() -> Any:
        async with coordinator(setup) as c:
            r = await c.advance()
            return r, c.board.pipeline("api", ns[0])

    r, p = arun(next_pass())
    assert r.dispatched and p.brief is None
    briefing = (
        Path(setup.root / "wd-local" / "runs" / r.dispatched[0] / "briefing.md")
    ).read_text()
    assert "no longer merges cleanly" in briefing and "`feature-1.txt`" in briefing


def test_dry_run_says_what_would_land_and_lands_nothing(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    ready(setup, machine, ["feature-1.txt"])
    report, pipelines = merge(setup, dry_run=True)
    assert report.dry_run and report.test_runs == 0
    assert report.batches[0]["would_land"] == [pipelines[0].key]
    assert origin_log(setup) == ["initial commit"] and pipelines[0].stage == "ready-to-merge"


def test_upstream_repos_land_first() -> None:
    assert order_repos(["web", "api", "cli"], {"web": ["api"], "cli": ["web"]}) == [
        "api", "web", "cli"]  # fmt: skip
    assert order_repos(["web"], {"web": ["api"]}) == ["web"]


@pytest.mark.parametrize("order", [["x"], ["api#999"]])
def test_order_names_only_ready_issues(setup: Setup, order: list[str]) -> None:
    from coordlib.errors import UsageError

    pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    with pytest.raises(UsageError):
        merge(setup, order=order)


def test_a_batch_lands_on_github(setup: Setup, fake_github: Any, tmp_path: Path) -> None:
    """The same queue against the schema-checked fake GitHub: the stack is pushed by git over
    HTTP; the PRs, which GitHub does not see merged (a pushed merge commit), are closed with
    a comment saying where they landed, and the issues closed."""
    import yaml

    from coordlib import Coordinator
    from tests.fakegithub.plugin import seed_repo

    work = seed_repo(fake_github, "acme/api", tmp_path / "gh-clone")
    setup.add_local("local", repo_paths={"api": str(work)}, max_workers=6)
    briefings = setup.root / "briefings"
    briefings.mkdir()
    (briefings / "review.md.j2").write_text("Review {{ branch }}.\n[fake:approve]\n")
    setup.extra["github"] = {"api_url": fake_github.api_url, "write_interval": 0}
    setup.extra["briefings"] = {"dir": str(briefings)}
    config = setup.write()
    data = yaml.safe_load(config.read_text())
    data["repos"][0].update(github="acme/api", test_command=LIMIT_TEST)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {"GITHUB_TOKEN": fake_github.token}

    async def go() -> tuple[Any, list[Any], list[Any], list[Any]]:
        async with Coordinator.from_path(config, environ=env) as c:
            forge = c.forge("api")
            ns = []
            for name in ("feature-1.txt", "feature-2.txt"):
                issue = await forge.create_issue(f"Add {name}", body=f"[fake:ok:{name}=hi]")
                await c.assign("local", "api", issue.number)
                ns.append(issue.number)
            for n in ns:
                assert (await drive(c, "api", n)).stage == "ready-to-merge"
            report = await c.merge()
            pipes = c.pipelines()
            prs = [await forge.get_pr(int(p.pr)) for p in pipes if p.pr]
            return report, pipes, prs, [await forge.get_issue(n) for n in ns]

    report, pipes, prs, issues = arun(go())
    assert report.test_runs == 1 and not report.errors, report
    assert all(p.stage == "merged" for p in pipes)
    assert all(pr.state == "closed" for pr in prs)
    assert all(i.state == "closed" and "status:done" in i.labels for i in issues)
    main = subprocess.run(["git", "ls-remote", fake_github.git_url("acme/api"), "main"],
                          capture_output=True, text=True, check=True).stdout.split()[0]  # fmt: skip
    assert main == report.batches[0]["landed"][0]["sha"]  # exactly the tested commit


def test_coord_run_until_idle_takes_an_issue_to_merged(setup: Setup) -> None:
    import sys

    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)

    async def start() -> int:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Add it. [fake:ok:feature-1.txt=hi]")
            await c.assign(machine, "api", n)
            return n

    n = arun(start())
    cmd = [sys.executable, "-m", "coord_cli", "--config", str(setup.config_path), "run",
           "--interval", "0.3", "--until-idle"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"api#{n}: ready-to-merge → merged" in out.stdout

    async def after() -> Any:
        async with coordinator(setup) as c:
            return c.board.pipeline("api", n)

    assert arun(after()).stage == "merged"


def test_two_merges_at_once_land_each_pr_once(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    ns = ready(setup, machine, ["feature-1.txt", "feature-2.txt"])

    async def go() -> tuple[Any, Any, list[Any]]:
        async with coordinator(setup) as c1, coordinator(setup) as c2:
            r1, r2 = await asyncio.gather(c1.merge(), c2.merge())
            return r1, r2, [await c1.forge("api").get_issue(n) for n in ns]

    r1, r2, issues = arun(go())
    landed = [x["issue"] for r in (r1, r2) for b in r.batches for x in b.get("landed", [])]
    assert sorted(landed) == sorted(f"api#{n}" for n in ns)  # each once
    assert r1.test_runs + r2.test_runs == 1
    for i in issues:
        assert sum("merged PR #" in c.body for c in i.comments) == 1


def test_prs_that_conflict_with_each_other_wait_for_the_next_merge(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)

    async def two() -> list[int]:
        async with coordinator(setup) as c:
            ns = []
            for text in ("mine", "yours"):  # the same file, two contents
                n = await new_issue(c, f"Write it. [fake:ok:feature-1.txt={text}]")
                await c.assign(machine, "api", n)
                ns.append(n)
            for n in ns:
                assert (await drive(c, "api", n)).stage == "ready-to-merge"
            return ns

    ns = arun(two())
    # From now on "mine" breaks the tests: the first PR is bounced by the merge queue.
    cfg = setup.config_path.read_text()
    breaks = json.dumps("! grep -q mine feature-1.txt")
    setup.config_path.write_text(cfg.replace(json.dumps(_current_test(cfg)), breaks))
    # (in this order: the two were ready at nearly the same moment, and either may be first)
    report, pipelines = merge(setup, order=[f"api#{n}" for n in ns])
    [batch] = report.batches
    assert batch["bounced"] == [f"api#{ns[0]}"] and batch["landed"] == []
    assert batch["deferred"] == [f"api#{ns[1]}"]  # it conflicted with #1 only: not bounced
    by = {p.issue: p for p in pipelines}
    assert by[ns[1]].stage == "ready-to-merge"  # untouched: no round spent on it
    report, pipelines = merge(setup)  # alone now: it lands
    assert [x["issue"] for x in report.batches[0]["landed"]] == [f"api#{ns[1]}"]


def test_a_pr_pushed_to_after_its_review_is_tested_again(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    [n] = ready(setup, machine, ["feature-1.txt"])

    push_unreviewed(setup, n)
    report, pipelines = merge(setup)
    assert report.test_runs == 0 and "changed after its review" in report.waiting[0]["why"]
    assert pipelines[0].stage == "test" and origin_log(setup) == ["initial commit"]


def test_a_smoke_rule_tests_on_the_machine_with_the_capability(setup: Setup) -> None:
    seen = setup.root / "smoke-ran.txt"
    setup.worker.update(confine=False)  # (the smoke command writes where it ran, outside)
    setup.add_local("gpubox", capabilities=["gpu"])
    setup.extra["smoke_tests"] = {
        "default_command": f"pwd >> {seen}; test -f gpu-kernel.txt",
        "capability_rules": [{"globs": ["gpu-*.txt"], "capability": "gpu"}],
    }
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    ns = ready(setup, machine, ["gpu-kernel.txt", "feature-1.txt"])
    report, _ = merge(setup)
    [batch] = report.batches
    assert not report.errors, report.errors
    assert sorted(x["issue"] for x in batch["landed"]) == sorted(f"api#{n}" for n in ns)
    assert batch["smoke_runs"] == 1 and report.test_runs == 1
    assert "/wd-gpubox/tests/" in seen.read_text()  # it ran on the machine with the GPU


def test_a_red_smoke_test_bounces_like_a_red_test(setup: Setup) -> None:
    setup.add_local("gpubox", capabilities=["gpu"])
    setup.extra["smoke_tests"] = {
        "capability_rules": [{"glob": "gpu-*.txt", "capability": "gpu", "command": "false"}],
    }
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    ns = ready(setup, machine, ["feature-1.txt", "gpu-kernel.txt"])
    report, pipelines = merge(setup)
    [batch] = report.batches
    assert [x["issue"] for x in batch["landed"]] == [f"api#{ns[0]}"]
    assert batch["bounced"] == [f"api#{ns[1]}"]
    assert {p.issue: p for p in pipelines}[ns[1]].stage == "fix"


def test_with_no_machine_for_the_capability_the_candidate_waits(setup: Setup) -> None:
    setup.extra["smoke_tests"] = {
        "default_command": "true",
        "capability_rules": [{"glob": "*.swift", "capability": "macos"}],
    }
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    ns = ready(setup, machine, ["feature-1.txt", "app.swift"])
    for dry in (True, False):
        report, pipelines = merge(setup, dry_run=dry)
        [waiting] = [w for w in report.waiting if w["issue"] == f"api#{ns[1]}"]
        assert "capability macos" in waiting["why"]
    by = {p.issue: p for p in pipelines}
    assert by[ns[0]].stage == "merged" and by[ns[1]].stage == "ready-to-merge"


def test_depends_on_lands_the_upstream_repo_first(tmp_path: Path, tmux_socket: str) -> None:
    """Two repos, web depending on api, each with a PR ready (put there directly): api's lands
    first; while api has a ready PR, web's waits and says why."""
    import yaml

    from coordlib import Coordinator
    from coordlib.board_pipelines import put_pipeline
    from coordlib.pipeline.state import READY, Pipeline
    from coordlib.testing.gitrepo import make_git_repo

    repos = {name: make_git_repo(tmp_path / name) for name in ("api", "web")}
    for name, repo in repos.items():
        who = ["-c", "user.name=b", "-c", "user.email=b@x"]
        for args in (["checkout", "-q", "-b", "issue-1-change"], ["commit", "-q", "--allow-empty",
                     *["-m", f"{name} change"]], ["push", "-q", "origin", "issue-1-change"],
                     ["checkout", "-q", "main"]):  # fmt: skip
            subprocess.run(["git", *(who if args[0] == "commit" else []), *args], cwd=repo.path,
                           check=True, capture_output=True)  # fmt: skip
    config = tmp_path / "coordinator.yml"
    config.write_text(yaml.safe_dump({
        "repos": [{"name": n, "url": str(r.origin), "test_command": "true",
                   **({"depends_on": ["api"]} if n == "web" else {})} for n, r in repos.items()],
        "machines": [{"name": "local", "host": "localhost", "workdir": str(tmp_path / "wd"),
                      "tmux_socket": tmux_socket,
                      "repo_paths": {n: str(r.path) for n, r in repos.items()}}],
    }, sort_keys=False))  # fmt: skip

    async def go() -> tuple[Any, Any]:
        async with Coordinator.from_path(config) as c:
            for name in ("web", "api"):  # web became ready first
                forge = c.forge(name)
                issue = await forge.create_issue("Change")
                pr = await forge.open_pr(head="issue-1-change", base="main", title="Change")
                head = (await forge.get_pr(pr.number)).head_sha
                approved = [{"stage": "review", "outcome": "approve", "sha": head}]
                p = Pipeline(repo=name, issue=issue.number, stage=READY, title="Change",
                             machine="local", branch="issue-1-change", pr=pr.number,
                             head_sha=head, tested_sha=head, verdicts=approved)  # fmt: skip
                with c.board.transaction() as txn:
                    put_pipeline(txn, p)
            waiting = await c.merge(repo="web", dry_run=True)
            return waiting, await c.merge()

    waiting, report = arun(go())
    assert "upstream api lands first" in waiting.waiting[0]["why"]
    assert [b["repo"] for b in report.batches] == ["api", "web"]
    assert all(b["landed"] for b in report.batches)


def test_auto_queue_smoke_tests_as_soon_as_the_review_approves(setup: Setup) -> None:
    setup.add_local("gpubox", capabilities=["gpu"])
    setup.extra["smoke_tests"] = {
        "auto_queue": True,
        "capability_rules": [{"glob": "gpu-*.txt", "capability": "gpu", "command": "false"}],
    }
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    cfg = setup.config_path.read_text()
    setup.config_path.write_text(cfg.replace(json.dumps(_current_test(cfg)),
                                             json.dumps(LIMIT_TEST)))  # fmt: skip

    async def go() -> Any:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Add it. [fake:ok:gpu-kernel.txt=x]")
            await c.assign(machine, "api", n)
            for _ in range(100):
                r = await c.advance()
                if any(m["outcome"] == "smoke failed" for m in r.moves):
                    return c.board.pipeline("api", n)
                await asyncio.sleep(0.2)
            raise AssertionError("no smoke test ran")

    p = arun(go())
    assert p.stage == "fix" and "smoke test on gpubox (gpu) failed" in p.failures
    assert p.merged_sha is None  # it never reached the merge queue


def test_a_push_that_slips_past_the_first_check_is_caught_after_the_stack(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone pushes to the PR between the check before stacking and the stack's fetch (made
    here by skipping the first check): the stack is checked again, and nothing lands."""
    from coordlib.merge.runner import Merger

    async def unchecked(self: Any, group: list[Any], report: Any) -> list[Any]:
        return group

    monkeypatch.setattr(Merger, "_still_as_reviewed", unchecked)
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    [n] = ready(setup, machine, ["feature-1.txt"])

    push_unreviewed(setup, n)
    report, pipelines = merge(setup)
    assert report.test_runs == 0 and not report.errors
    assert "changed after its review while the batch was stacked" in report.waiting[0]["why"]
    assert pipelines[0].stage == "test" and origin_log(setup) == ["initial commit"]
