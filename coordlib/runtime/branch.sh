# coord-run's verbs on a repo's commits and branches.  Sent like remote.sh's (see
# protocol.remote_script): the common part, then what this file has before its first section
# (the checks the verbs share), the verb's own section, then remote.sh's verb table.
#
#   test WORKDIR ID REPO_PATH REF N_BUILD N_TEST TIMEOUT
#        stdin: the build command, then the test command (byte counts given; 0: none).
#        Checks REF (a commit's sha, or a branch coord names) out detached at
#        WORKDIR/tests/ID/wt, runs the build, then (if it passed) the tests, each as
#        `bash -c` there within TIMEOUT seconds in all, into tests/ID/output.log; then
#        removes the worktree and writes tests/ID/result.json.  Tests that fail are an
#        answer ("tested exit=N phase=test"), not a failure of the verb.
#   push REPO_PATH BRANCH   push the branch, as the repo has it now, to the repo's origin
#   stack WORKDIR ID REPO_PATH BASE METHOD N_MSGS BRANCH...
#        stdin: per branch, in order, its commit message as "SIZE\n" then SIZE bytes
#        (N_MSGS bytes in all).  Fetches BASE and the branches from origin, then applies
#        the branches one after another (merge, squash or rebase) on BASE in a detached
#        worktree WORKDIR/stacks/ID/wt, which it removes again: the commits stay in the
#        repo, to be tested and landed by their sha.  A branch that conflicts is left out
#        (an answer, not a failure), and the stack goes on without it.
#   land REPO_PATH BASE SHA EXPECTED
#        push commit SHA to origin's BASE if origin's BASE is still EXPECTED (an ancestor
#        of SHA: a land is always a fast-forward), and only then.
#
# None takes anything from its arguments but words checked here: git reads none of them as
# an option (refs go as refs/heads/B or a sha), and the commands a test runs and the
# messages a stack commits come from the coordinator on stdin, never from an argument.

is_branch() { # is_branch TEXT -> status 0 when TEXT is a branch coord names: issue-<N>[-<slug>][-r<K>]
    # Words of [a-z0-9] joined by single hyphens, "issue" then a number (protocol.BRANCH),
    # checked with globs: a regex's [a-z] depends on the locale.
    local n=${1#issue-}
    n=${n%%-*}
    [[ $1 == issue-?* && $1 != *[!a-z0-9-]* && $1 != *--* && $1 != *- && $n != *[!0-9]* ]] &&
        ((${#1} <= 200))
}

need_branch() { # need_branch VERB TEXT: exit 2 unless TEXT is a branch coord names
    is_branch "$2" && return 0
    local s
    shown s "$2"
    die 2 "$1: branch '$s' is not one coord names (issue-<N>[-<slug>][-r<K>])"
}

is_sha() { # is_sha TEXT -> status 0 when TEXT is a commit's full sha (40 or 64 hex digits)
    case ${#1} in 40 | 64) [[ $1 != *[!0-9a-f]* ]] ;; *) return 1 ;; esac
}

need_sha() { # need_sha VERB WHAT TEXT: exit 2 unless TEXT is a commit's full sha
    is_sha "$3" && return 0
    local s
    shown s "$3"
    die 2 "$1: $2 '$s' is not a commit's sha (40 hex digits)"
}

need_ref() { # need_ref VERB TEXT: exit 2 unless TEXT is a commit's sha or a branch coord names
    is_sha "$2" && return 0
    is_branch "$2" && return 0
    local s
    shown s "$2"
    die 2 "$1: ref '$s' is neither a commit's sha (40 hex digits) nor a branch coord names (issue-<N>[-<slug>][-r<K>])"
}

read_command() { # read_command VAR N: set VAR to exactly N bytes of stdin, or status 1
    local LC_ALL=C _cmd="" # C: N counts bytes, and bytes pass as they are
    if (($2 > 0)); then
        IFS= read -r -d '' -N "$2" _cmd
    fi
    # A command cut short (or with a NUL, which read drops) would run as something else.
    [ "${#_cmd}" -eq "$2" ] && printf -v "$1" '%s' "$_cmd"
}

push_refused() { # push_refused VAR OUTPUT: set VAR to why git push --porcelain refused, one line
    local _line _why=""
    while IFS= read -r _line; do
        case $_line in
            "" | hint:* | "To "* | Done) continue ;;
            ?$'\t'*$'\t'*) _line=${_line##*$'\t'} ;; # porcelain: FLAG TAB FROM:TO TAB SUMMARY
        esac
        _why+="${_why:+; }$_line"
    done <<<"$2"
    printf -v "$1" '%s' "${_why//[[:cntrl:]]/?}"
}

# ---------------------------------------------------------------- test
TEST_TAIL=4000 # the bytes of output.log's end that the answer carries (protocol.TEST_TAIL)

test_worktree_gone() { # remove the test's worktree, whatever its commands left in it
    [ -n "${T_WT:-}" ] || return 0
    git -C "$T_REPO" worktree remove --force "$T_WT" >/dev/null 2>&1 || rm -rf -- "$T_WT"
    git -C "$T_REPO" worktree prune >/dev/null 2>&1
    [ -z "${T_TMP:-}" ] || rm -rf -- "$T_TMP"
    T_WT=""
}

test_failed() { # test_failed CODE MESSAGE: undo a test that could not run, so its id works again
    test_worktree_gone
    rm -rf -- "$T_DIR"
}

test_stopped() { # test_stopped STATUS: a signal ends the verb: end the commands, remove the worktree
    trap - HUP INT TERM
    # timeout(1) passes the signal on to every process of the command's.
    [ -n "${T_PID:-}" ] && kill -TERM "$T_PID" 2>/dev/null && wait "$T_PID"
    test_worktree_gone
    local rc=$1
    exit "$rc"
}

run_part() { # run_part COMMAND SECONDS: run COMMAND as shell in the worktree; status: its own
    # (confined: in SANDBOX, with a temp dir of its own)
    (cd "$T_WT" && { [ -z "$T_TMP" ] || export TMPDIR=$T_TMP; } &&
        CI=true COORD_TEST=1 exec timeout -k 10 "$2" "${SANDBOX[@]}" bash -c "$1") \
        >>"$T_DIR/output.log" 2>&1 </dev/null &
    T_PID=$!
    wait "$T_PID" # (a trapped signal interrupts the wait, not a command in the foreground)
    local rc=$?
    T_PID=""
    return "$rc"
}

cmd_test() {
    need_args test $# 8 "WORKDIR ID REPO_PATH REF N_BUILD N_TEST TIMEOUT CONFINE"
    need_path test workdir "$1"
    need_id test "$2"
    need_path test "repo path" "$3"
    need_ref test "$4"
    need_num test "build command size" "$5"
    need_num test "test command size" "$6"
    need_num test timeout "$7"
    # (timeout 0 would be no limit; ten digits could overflow the microseconds below)
    [ "$7" != 0 ] && ((${#7} <= 9)) || die 2 "test: timeout '$7' is not a number of seconds from 1 to 999999999"
    [ "$8" = 0 ] || [ "$8" = 1 ] || die 2 "test: CONFINE '$8' is not 0 or 1"
    local workdir repo id=$2 ref=$4 budget=$7 build="" check="" gitdir spec sha dir
    home_path workdir "$1" && home_path repo "$3"
    dir="$workdir/tests/$id"
    read_command build "$5" || die 15 "the build command arrived truncated"
    read_command check "$6" || die 15 "the test command arrived truncated"

    command -v git >/dev/null 2>&1 || die 20 "git is not installed on this machine (apt-get install git)"
    gitdir=$(git -C "$repo" rev-parse --git-common-dir 2>/dev/null) ||
        die 10 "$repo is not a git repository on this machine (clone it there, or set repo_paths in coordinator.yml)"
    case $gitdir in /*) ;; *) gitdir="$repo/$gitdir" ;; esac
    case $ref in issue-*) spec="refs/heads/$ref" ;; *) spec=$ref ;; esac
    if ! sha=$(git -C "$repo" rev-parse --verify --quiet "$spec^{commit}"); then
        [ "$spec" = "$ref" ] && die 21 "commit $ref is not in $repo (fetch it there first)"
        die 21 "branch $ref does not exist in $repo"
    fi

    mkdir -p "$workdir/tests" "$workdir/locks" ||
        die 14 "cannot create the directories under $workdir (disk full?)"
    [ -e "$dir" ] && die 13 "test directory $dir already exists (each test needs an id of its own)"
    mkdir "$dir" 2>/dev/null || die 13 "cannot create the test directory $dir (disk full, or it exists)"
    T_DIR=$dir T_REPO=$repo T_WT="" T_PID="" T_TMP="" ON_DIE=test_failed SANDBOX=()
    : >"$dir/output.log" || die 14 "cannot write in $dir (disk full?)"
    # Confined (worker.confine): the branch's commands are the worker's, so they run as it
    # does, held by the kernel: only the test's worktree and a temp dir of its own writable,
    # the home's secrets and coordlib's runs out of sight.
    if [ "$8" = 1 ]; then
        command -v bwrap >/dev/null 2>&1 ||
            die 29 "worker.confine is on but this machine cannot sandbox the tests: install bubblewrap (apt-get install bubblewrap socat, or coord setup MACHINE), or set worker.confine: false"
        T_TMP="$dir/tmp"
        mkdir "$T_TMP" || die 14 "cannot create $T_TMP (disk full?)"
    fi
    trap 'test_stopped 129' HUP
    trap 'test_stopped 130' INT
    trap 'test_stopped 143' TERM
    # git worktree add takes git's lock files as a dispatch's does: the same lock as theirs.
    repo_lock "$gitdir" "$workdir" "$repo" ||
        die 18 "another dispatch or test has held the lock on $repo for 120 s"
    T_WT="$dir/wt"
    git -C "$repo" worktree add --quiet --detach "$T_WT" "$sha" >&2 ||
        die 12 "git worktree add --detach $T_WT at $sha failed in $repo"
    exec 9>&-
    [ -n "$T_TMP" ] && sandbox_argv "$HOME" "$workdir/runs" "$T_WT" "$T_TMP"
    ON_DIE="" # from here the test runs: whatever happens, its output stays

    # One budget for both commands: the tests get what the build left of it.
    local start now left rc=0 phase=none timed_out=0 part cmd
    start=${EPOCHREALTIME/[.,]/} # microseconds
    for part in build test; do
        [ "$part" = build ] && cmd=$build || cmd=$check
        [ -n "$cmd" ] || continue
        ((rc == 0)) || break # the build failed: nothing to test
        phase=$part
        now=${EPOCHREALTIME/[.,]/}
        left=$((budget * 1000000 - (now - start)))
        if ((left <= 0)); then
            rc=124 timed_out=1
            break
        fi
        printf -v left '%d.%06d' $((left / 1000000)) $((left % 1000000))
        run_part "$cmd" "$left"
        rc=$?
        now=${EPOCHREALTIME/[.,]/}
        # 124 (or 137, killed after 10 s more) is timeout's only when the budget ran out:
        # a command may exit 124 by itself.
        if ((rc == 124 || rc == 137)) && ((now - start >= budget * 1000000)); then
            timed_out=1
            break
        fi
    done
    local us=$((${EPOCHREALTIME/[.,]/} - start)) seconds
    printf -v seconds '%d.%03d' $((us / 1000000)) $((us % 1000000 / 1000))
    test_worktree_gone
    trap - HUP INT TERM

    local log="$dir/output.log" result="$dir/result.json" late=false size n
    ((timed_out)) && late=true
    printf '{"sha":"%s","exit_code":%s,"phase":"%s","timed_out":%s,"seconds":%s}\n' \
        "$sha" "$rc" "$phase" "$late" "$seconds" >"$result.tmp" && mv -f "$result.tmp" "$result" ||
        die 15 "cannot write $result (disk full?)"
    size=$(wc -c <"$log") || die 15 "cannot read $log"
    n=$((size < TEST_TAIL ? size : TEST_TAIL))
    printf '%s test\ntested sha=%s exit=%s phase=%s timed_out=%s seconds=%s log=%s\ntail %s\n' \
        "$PROTOCOL" "$sha" "$rc" "$phase" "$timed_out" "$seconds" "$log" "$n"
    # (head: exactly n bytes, even if something the tests left behind still writes the log)
    tail -c "$n" "$log" | head -c "$n"
    printf '\nend\n'
}

# ---------------------------------------------------------------- push
cmd_push() {
    need_args push $# 2 "REPO_PATH BRANCH"
    need_path push "repo path" "$1"
    need_branch push "$2"
    local repo branch=$2 sha out line why=""
    home_path repo "$1"
    command -v git >/dev/null 2>&1 || die 20 "git is not installed on this machine (apt-get install git)"
    git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 ||
        die 10 "$repo is not a git repository on this machine (clone it there, or set repo_paths in coordinator.yml)"
    git -C "$repo" remote get-url --push origin >/dev/null 2>&1 ||
        die 22 "$repo has no remote origin to push $branch to (git -C $repo remote add origin URL)"
    sha=$(git -C "$repo" rev-parse --verify --quiet "refs/heads/$branch^{commit}") ||
        die 23 "branch $branch does not exist in $repo"
    # The commit read above is the one pushed, and reported, whatever moves the branch
    # meanwhile; and no prompt for a password can hold the push up.
    if ! out=$(GIT_TERMINAL_PROMPT=0 git -C "$repo" push --porcelain origin \
        "$sha:refs/heads/$branch" 2>&1 </dev/null); then
        push_refused why "$out"
        die 24 "git push origin $branch failed in $repo: ${why:0:400}"
    fi
    printf '%s push\npushed branch=%s sha=%s\nend\n' "$PROTOCOL" "$branch" "$sha"
}

# ---------------------------------------------------------------- stack
stack_gone() { # remove the stack's worktree and its directory (its commits stay in the repo)
    if [ -n "${S_WT:-}" ]; then
        git -C "$S_REPO" worktree remove --force "$S_WT" >/dev/null 2>&1 || rm -rf -- "$S_WT"
        git -C "$S_REPO" worktree prune >/dev/null 2>&1
        S_WT=""
    fi
    [ -z "${S_DIR:-}" ] || rm -rf -- "$S_DIR"
    S_DIR=""
}

stack_failed() { # stack_failed CODE MESSAGE: undo a stack that could not be made
    stack_gone
}

stack_stopped() { # stack_stopped STATUS: a signal ends the verb: remove what it made
    trap - HUP INT TERM
    stack_gone
    exit "$1"
}

cmd_stack() {
    need_args stack $# 6 "WORKDIR ID REPO_PATH BASE METHOD N_MSGS [BRANCH...]" 1
    need_path stack workdir "$1"
    need_id stack "$2"
    need_path stack "repo path" "$3"
    need_shape stack "base branch" "$4" A-Za-z0-9_ A-Za-z0-9._/- 200
    need_word stack method "$5" merge squash rebase
    need_num stack "messages size" "$6"
    (($# > 6)) || die 2 "stack: expected WORKDIR ID REPO_PATH BASE METHOD N_MSGS BRANCH..., got no branch"
    # C: sizes count bytes, and a message's bytes pass as they are.
    local LC_ALL=C workdir repo id=$2 base=$4 method=$5 b n msg all="" gitdir dir
    local -a branches=("${@:7}") msgs=()
    local -A seen=() remote=()
    for b in "${branches[@]}"; do
        need_branch stack "$b"
        [ -z "${seen[$b]:-}" ] || die 2 "stack: branch $b is given twice"
        seen[$b]=1
    done
    home_path workdir "$1" && home_path repo "$3"
    dir="$workdir/stacks/$id"
    # The messages: each "SIZE\n" then SIZE bytes, and nothing after the last.
    read_command all "$6" || die 15 "the commit messages arrived truncated"
    for b in "${branches[@]}"; do
        [[ $all == *$'\n'* ]] || die 15 "the commit message for $b did not arrive"
        n=${all%%$'\n'*}
        all=${all#*$'\n'}
        valid_num "$n" && ((n <= ${#all})) || die 15 "the commit message for $b arrived truncated"
        msg=${all:0:n}
        all=${all:n}
        [[ $msg == *[![:space:]]* ]] || die 2 "stack: the commit message for $b is empty"
        msgs+=("$msg")
    done
    [ -z "$all" ] || die 15 "the commit messages arrived with ${#all} bytes too many"

    command -v git >/dev/null 2>&1 || die 20 "git is not installed on this machine (apt-get install git)"
    gitdir=$(git -C "$repo" rev-parse --git-common-dir 2>/dev/null) ||
        die 10 "$repo is not a git repository on this machine (clone it there, or set repo_paths in coordinator.yml)"
    case $gitdir in /*) ;; *) gitdir="$repo/$gitdir" ;; esac

    mkdir -p "$workdir/stacks" "$workdir/locks" ||
        die 14 "cannot create the directories under $workdir (disk full?)"
    [ -e "$dir" ] && die 13 "stack directory $dir already exists (each stack needs an id of its own)"
    mkdir "$dir" 2>/dev/null || die 13 "cannot create the stack directory $dir (disk full, or it exists)"
    S_DIR=$dir S_REPO=$repo S_WT="" ON_DIE=stack_failed
    trap 'stack_stopped 129' HUP
    trap 'stack_stopped 130' INT
    trap 'stack_stopped 143' TERM
    # The fetch and git worktree add take git's lock files as a dispatch's do: its lock.
    repo_lock "$gitdir" "$workdir" "$repo" ||
        die 18 "another dispatch, test or stack has held the lock on $repo for 120 s"

    # origin's base and branches, in one fetch; if one of them is not there, origin is asked
    # which are, and those are fetched.  (A branch origin lacks is taken from the repo.)
    local base_sha cand listed ref got_base=0
    local -a specs=()
    if git -C "$repo" remote get-url origin >/dev/null 2>&1; then
        for b in "$base" "${branches[@]}"; do specs+=("+refs/heads/$b:refs/remotes/origin/$b"); done
        if GIT_TERMINAL_PROMPT=0 git -C "$repo" fetch --quiet origin "${specs[@]}" </dev/null 2>/dev/null; then
            for b in "${branches[@]}"; do remote[$b]=1; done
        else
            listed=$(GIT_TERMINAL_PROMPT=0 git -C "$repo" ls-remote origin "refs/heads/$base" \
                "${branches[@]/#/refs/heads/}" </dev/null) ||
                die 11 "git ls-remote origin failed in $repo (cannot reach origin?)"
            specs=()
            while IFS=$'\t' read -r _ ref; do
                b=${ref#refs/heads/}
                [ "$ref" = "refs/heads/$b" ] || continue
                if [ "$b" = "$base" ]; then
                    specs+=("+$ref:refs/remotes/origin/$b")
                    got_base=1
                elif is_branch "$b" && [ -n "${seen[$b]:-}" ]; then
                    specs+=("+$ref:refs/remotes/origin/$b")
                    remote[$b]=1
                fi
            done <<<"$listed"
            ((got_base)) ||
                die 25 "origin has no branch $base (the base to stack on) for $repo"
            GIT_TERMINAL_PROMPT=0 git -C "$repo" fetch --quiet origin "${specs[@]}" </dev/null >&2 ||
                die 11 "git fetch origin $base and the branches failed in $repo"
        fi
        base_sha=$(git -C "$repo" rev-parse --verify --quiet "refs/remotes/origin/$base^{commit}") ||
            die 25 "origin has no branch $base (the base to stack on) for $repo"
    else
        base_sha=$(git -C "$repo" rev-parse --verify --quiet "refs/heads/$base^{commit}") ||
            die 25 "branch $base (the base to stack on) does not exist in $repo"
    fi
    S_WT="$dir/wt"
    git -C "$repo" worktree add --quiet --detach "$S_WT" "$base_sha" >&2 ||
        die 12 "git worktree add --detach $S_WT at $base_sha failed in $repo"
    exec 9>&-

    # Commits need someone to make them: coord, unless the repo or the user says who.
    # (A cherry-pick keeps each commit's author; merge and squash commits are coord's.)
    if [ -z "$(git -C "$S_WT" config --get user.name)" ]; then
        export GIT_COMMITTER_NAME=coord GIT_AUTHOR_NAME=coord
    fi
    if [ -z "$(git -C "$S_WT" config --get user.email)" ]; then
        export GIT_COMMITTER_EMAIL=coord@localhost GIT_AUTHOR_EMAIL=coord@localhost
    fi

    local top=$base_sha out="" files conflicts applied k=0
    local -a picks
    for b in "${branches[@]}"; do
        msg=${msgs[k]}
        k=$((k + 1))
        # origin's branch if it has one, else the repo's own
        ref="refs/heads/$b"
        [ -z "${remote[$b]:-}" ] || ref="refs/remotes/origin/$b"
        if ! cand=$(git -C "$repo" rev-parse --verify --quiet "$ref^{commit}"); then
            out+="missing branch=$b"$'\n'
            continue
        fi
        # What the branch changes, as its pull request shows it (renames as two paths).
        files=$(git -C "$S_WT" -c core.quotePath=false diff --no-ext-diff --no-renames \
            --name-only "$base_sha...$cand" 2>/dev/null) || files=""
        printf '%s' "$msg" >"$dir/message" || die 14 "cannot write in $dir (disk full?)"
        applied=1
        case $method in
            merge)
                # (--no-commit, then commit -F: a merge commit's message can be of any size)
                if git -C "$S_WT" merge --quiet --no-ff --no-commit "$cand" >&2; then
                    if git -C "$S_WT" rev-parse --quiet --verify MERGE_HEAD >/dev/null; then
                        git -C "$S_WT" commit --quiet --no-verify -F "$dir/message" >&2 || applied=0
                    fi # (else the stack has the branch already: applied, as it is)
                else
                    applied=0
                fi
                ;;
            squash)
                if git -C "$S_WT" merge --quiet --squash "$cand" >&2; then
                    git -C "$S_WT" diff --cached --quiet ||
                        git -C "$S_WT" commit --quiet --no-verify -F "$dir/message" >&2 || applied=0
                else
                    applied=0
                fi
                ;;
            rebase)
                picks=()
                if listed=$(git -C "$S_WT" rev-list --reverse --no-merges "$base_sha..$cand"); then
                    [ -z "$listed" ] || mapfile -t picks <<<"$listed"
                    if ((${#picks[@]})); then
                        git -C "$S_WT" cherry-pick --keep-redundant-commits "${picks[@]}" \
                            </dev/null >&2 || applied=0
                    fi
                else
                    applied=0
                fi
                ;;
        esac
        if ((applied)); then
            top=$(git -C "$S_WT" rev-parse --verify HEAD) ||
                die 12 "cannot read the stack's head in $S_WT after $b"
            out+="applied branch=$b sha=$top"$'\n'
        else
            conflicts=$(git -C "$S_WT" -c core.quotePath=false diff --name-only \
                --diff-filter=U 2>/dev/null) || conflicts=""
            # Back to the stack before the branch, and on without it.
            if [ "$method" = rebase ]; then
                git -C "$S_WT" cherry-pick --abort >/dev/null 2>&1
            else
                git -C "$S_WT" merge --abort >/dev/null 2>&1
            fi
            git -C "$S_WT" reset --quiet --hard "$top" >&2 && git -C "$S_WT" clean -q -f -d >&2 ||
                die 12 "cannot reset the stack in $S_WT to $top after $b did not apply"
            # No conflicting path: git failed for another reason (a commit hook, signing, a
            # full disk), which no conflict-fix worker can mend: say so rather than blame $b.
            [ -n "$conflicts" ] ||
                die 12 "git could not apply $b in $S_WT, and no file conflicts (see the lines above)"
            out+="conflict branch=$b ${#conflicts}"$'\n'"$conflicts"$'\n'
        fi
        out+="files branch=$b ${#files}"$'\n'"$files"$'\n'
    done
    stack_gone
    trap - HUP INT TERM
    ON_DIE=""
    printf '%s stack\nbase sha=%s\n%send\n' "$PROTOCOL" "$base_sha" "$out"
}

# ---------------------------------------------------------------- land
cmd_land() {
    need_args land $# 4 "REPO_PATH BASE SHA EXPECTED"
    need_path land "repo path" "$1"
    need_shape land "base branch" "$2" A-Za-z0-9_ A-Za-z0-9._/- 200
    need_sha land sha "$3"
    need_sha land "expected sha" "$4"
    local repo base=$2 sha=$3 expected=$4 out line ref why="" now
    home_path repo "$1"
    command -v git >/dev/null 2>&1 || die 20 "git is not installed on this machine (apt-get install git)"
    git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 ||
        die 10 "$repo is not a git repository on this machine (clone it there, or set repo_paths in coordinator.yml)"
    git -C "$repo" remote get-url --push origin >/dev/null 2>&1 ||
        die 22 "$repo has no remote origin to land $sha on"
    git -C "$repo" rev-parse --verify --quiet "$sha^{commit}" >/dev/null ||
        die 21 "commit $sha is not in $repo (stack it there first)"
    git -C "$repo" rev-parse --verify --quiet "$expected^{commit}" >/dev/null ||
        die 21 "commit $expected (origin's $base as expected) is not in $repo"
    git -C "$repo" merge-base --is-ancestor "$expected" "$sha" 2>/dev/null ||
        die 27 "$sha does not descend from $expected (origin's $base as expected): landing it would not be a fast-forward"
    # The lease: origin takes the commit only while its base is the one the stack was made
    # on (and tested on); and no prompt for a password can hold the push up.
    if ! out=$(GIT_TERMINAL_PROMPT=0 git -C "$repo" push --porcelain \
        "--force-with-lease=refs/heads/$base:$expected" origin "$sha:refs/heads/$base" \
        2>&1 </dev/null); then
        if [[ $out == *$'\t'"[rejected] (stale info)"* ]]; then
            why="origin's $base is no longer $expected"
            if now=$(GIT_TERMINAL_PROMPT=0 git -C "$repo" ls-remote origin "refs/heads/$base" \
                2>/dev/null </dev/null); then
                why="origin has no branch $base now"
                while IFS=$'\t' read -r line ref; do
                    [ "$ref" = "refs/heads/$base" ] && why="origin's $base is at $line now, not $expected"
                done <<<"$now"
            fi
            die 26 "$why (someone pushed meanwhile): $sha did not land"
        fi
        push_refused why "$out"
        die 24 "git push origin $sha:$base failed in $repo: ${why:0:400}"
    fi
    printf '%s land\nlanded base=%s sha=%s\nend\n' "$PROTOCOL" "$base" "$sha"
}

# ---------------------------------------------------------------- sync
cmd_sync() { # sync REPO_PATH BASE PULL: the checkout's BASE against origin's; PULL=1: fast-forward
    need_args sync $# 3 "REPO_PATH BASE PULL"
    need_path sync "repo path" "$1"
    need_shape sync "base branch" "$2" A-Za-z0-9_ A-Za-z0-9._/- 200
    need_word sync pull "$3" 0 1
    local repo base=$2 pull=$3 on="" counts behind=0 ahead=0 dirty pulled=0 why=""
    home_path repo "$1"
    command -v git >/dev/null 2>&1 || die 20 "git is not installed on this machine (apt-get install git)"
    git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 ||
        die 10 "$repo is not a git repository on this machine (clone it there, or set repo_paths in coordinator.yml)"
    git -C "$repo" remote get-url origin >/dev/null 2>&1 ||
        die 22 "$repo has no remote origin to compare $base with (git -C $repo remote add origin URL)"
    GIT_TERMINAL_PROMPT=0 git -C "$repo" fetch --quiet origin "$base" </dev/null >/dev/null 2>&1 ||
        die 11 "git fetch origin $base failed in $repo (cannot reach origin?)"
    git -C "$repo" rev-parse --verify --quiet "refs/heads/$base" >/dev/null ||
        die 23 "branch $base does not exist in $repo (git -C $repo branch $base origin/$base)"
    counts=$(git -C "$repo" rev-list --left-right --count "refs/remotes/origin/$base...refs/heads/$base")
    read -r behind ahead <<<"$counts"
    on=$(git -C "$repo" symbolic-ref --quiet --short HEAD 2>/dev/null) || on=""
    dirty=$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
    if [ "$pull" = 1 ] && ((behind > 0)); then
        if ((ahead > 0)); then
            why="it has $ahead commit(s) origin does not: merge or rebase by hand"
        elif [ "$on" = "$base" ]; then
            if ((dirty > 0)); then
                why="$dirty file(s) changed in it: commit or stash them, then pull"
            elif git -C "$repo" merge --ff-only --quiet "refs/remotes/origin/$base" >/dev/null 2>&1; then
                pulled=1
            else
                why="git merge --ff-only failed"
            fi
        elif git -C "$repo" update-ref "refs/heads/$base" "refs/remotes/origin/$base" \
            "$(git -C "$repo" rev-parse "refs/heads/$base")" 2>/dev/null; then
            pulled=1 # not checked out: its ref moves, no file is touched
        else
            why="git update-ref failed"
        fi
    fi
    json_str why "$why"
    printf '%s sync\nsynced base=%s behind=%s ahead=%s dirty=%s pulled=%s on=%s\nwhy %s\nend\n' \
        "$PROTOCOL" "$base" "$behind" "$ahead" "$dirty" "$pulled" "${on:--}" "$why"
}
