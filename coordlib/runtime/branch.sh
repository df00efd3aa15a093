# coord-run's verbs on a repo's commits and branches.  Sent like remote.sh's (see
# protocol.remote_script): the common part, then what this file has before its first section
# (the checks both verbs share), the verb's own section, then remote.sh's verb table.
#
#   test WORKDIR ID REPO_PATH REF N_BUILD N_TEST TIMEOUT
#        stdin: the build command, then the test command (byte counts given; 0: none).
#        Checks REF (a commit's sha, or a branch coord names) out detached at
#        WORKDIR/tests/ID/wt, runs the build, then (if it passed) the tests, each as
#        `bash -c` there within TIMEOUT seconds in all, into tests/ID/output.log; then
#        removes the worktree and writes tests/ID/result.json.  Tests that fail are an
#        answer ("tested exit=N phase=test"), not a failure of the verb.
#   push REPO_PATH BRANCH   push the branch, as the repo has it now, to the repo's origin
#
# Neither takes anything from its arguments but words checked here: git reads none of them as
# an option (refs go as refs/heads/B or a sha), and the commands a test runs come from the
# coordinator's config on stdin, never from an argument.

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

need_ref() { # need_ref VERB TEXT: exit 2 unless TEXT is a commit's sha or a branch coord names
    case ${#2} in 40 | 64) [[ $2 != *[!0-9a-f]* ]] && return 0 ;; esac
    is_branch "$2" && return 0
    local s
    shown s "$2"
    die 2 "$1: ref '$s' is neither a commit's sha (40 hex digits) nor a branch coord names (issue-<N>[-<slug>][-r<K>])"
}

# ---------------------------------------------------------------- test
TEST_TAIL=4000 # the bytes of output.log's end that the answer carries (protocol.TEST_TAIL)

read_command() { # read_command VAR N: set VAR to exactly N bytes of stdin, or status 1
    local LC_ALL=C _cmd="" # C: N counts bytes, and bytes pass as they are
    if (($2 > 0)); then
        IFS= read -r -d '' -N "$2" _cmd
    fi
    # A command cut short (or with a NUL, which read drops) would run as something else.
    [ "${#_cmd}" -eq "$2" ] && printf -v "$1" '%s' "$_cmd"
}

test_worktree_gone() { # remove the test's worktree, whatever its commands left in it
    [ -n "${T_WT:-}" ] || return 0
    git -C "$T_REPO" worktree remove --force "$T_WT" >/dev/null 2>&1 || rm -rf -- "$T_WT"
    git -C "$T_REPO" worktree prune >/dev/null 2>&1
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
    (cd "$T_WT" && CI=true COORD_TEST=1 exec timeout -k 10 "$2" bash -c "$1") \
        >>"$T_DIR/output.log" 2>&1 </dev/null &
    T_PID=$!
    wait "$T_PID" # (a trapped signal interrupts the wait, not a command in the foreground)
    local rc=$?
    T_PID=""
    return "$rc"
}

cmd_test() {
    need_args test $# 7 "WORKDIR ID REPO_PATH REF N_BUILD N_TEST TIMEOUT"
    need_path test workdir "$1"
    need_id test "$2"
    need_path test "repo path" "$3"
    need_ref test "$4"
    need_num test "build command size" "$5"
    need_num test "test command size" "$6"
    need_num test timeout "$7"
    # (timeout 0 would be no limit; ten digits could overflow the microseconds below)
    [ "$7" != 0 ] && ((${#7} <= 9)) || die 2 "test: timeout '$7' is not a number of seconds from 1 to 999999999"
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
    T_DIR=$dir T_REPO=$repo T_WT="" T_PID="" ON_DIE=test_failed
    : >"$dir/output.log" || die 14 "cannot write in $dir (disk full?)"
    trap 'test_stopped 129' HUP
    trap 'test_stopped 130' INT
    trap 'test_stopped 143' TERM
    # git worktree add takes git's lock files as a dispatch's does: the same lock as theirs.
    if command -v flock >/dev/null 2>&1; then
        { exec 9>>"$gitdir/coord-dispatch.lock"; } 2>/dev/null ||
            exec 9>"$workdir/locks/repo-$(printf '%s' "$repo" | cksum | cut -d' ' -f1).lock"
        flock -w 120 9 || die 18 "another dispatch or test has held the lock on $repo for 120 s"
    fi
    T_WT="$dir/wt"
    git -C "$repo" worktree add --quiet --detach "$T_WT" "$sha" >&2 ||
        die 12 "git worktree add --detach $T_WT at $sha failed in $repo"
    exec 9>&-
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
        while IFS= read -r line; do
            case $line in
                "" | hint:* | "To "* | Done) continue ;;
                ?$'\t'*$'\t'*) line=${line##*$'\t'} ;; # porcelain: FLAG TAB FROM:TO TAB SUMMARY
            esac
            why+="${why:+; }$line"
        done <<<"$out"
        why=${why//[[:cntrl:]]/?}
        die 24 "git push origin $branch failed in $repo: ${why:0:400}"
    fi
    printf '%s push\npushed branch=%s sha=%s\nend\n' "$PROTOCOL" "$branch" "$sha"
}
