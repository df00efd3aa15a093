# coord-run: the only code of ours that ever runs on a worker machine.
#
# It is never installed as a service.  The coordinator sends this text as the
# argument of `bash -c` with every remote command (so each operation costs one
# remote command and there is nothing to keep in sync), and `dispatch` saves a
# copy as $WORKDIR/bin/coord-run-<hash> for the launcher that tmux keeps alive.
#
#   dispatch WORKDIR ID REPO_PATH WORKTREE BRANCH BASE SOCKET HASH N_BRIEF N_SPEC N_LAUNCH MODE
#            stdin: briefing, spec.json, launch.env (byte counts given), then the
#            worker's environment as NUL-separated NAME=VALUE records ending "=END".
#            MODE "new" makes the worktree on a new branch from origin/BASE; "continue"
#            reuses the existing worktree (a session resumed with guidance, or after a
#            rate limit), and refuses while another worker still holds it.
#   run      RUN_DIR                  the launcher + watchdog (started by dispatch in tmux)
#   status   WORKDIR SOCKET [live|all] [ID:OFFSET:MAX ...]   state of every run (live:
#            only the running ones and those asked about), framed text on stdout
#   stop     WORKDIR ID               ask a run to stop and wait for its exit record
#   tail     WORKDIR ID OFFSET FILE FOLLOW  print FILE from byte OFFSET; FOLLOW=1 keeps
#            streaming until the run's launcher exits
#   clean    WORKDIR MODE KEEP_RUNS   stdin: ID NUL WORKTREE NUL per finished run; removes
#            (MODE remove) or checks (MODE check) each clean worktree coord made and each
#            run dir (unless KEEP_RUNS=1); a JSON line per run, then "end"
#
# Every argument arrives as a separate, already-quoted word: no user text is
# ever parsed by a shell here.  Briefings travel on stdin and are read from files;
# the worker reads its prompt from briefing.md on its stdin, never from its argv.
# Every verb checks its arguments (valid_id, valid_num ...) before it uses any, and
# refuses a bad one with exit status 2 having touched nothing: an id becomes a path
# and an array key, and bash evaluates array subscripts and numbers in arithmetic.
set -u
umask 077
unset TMUX TMUX_PANE
# [A-Z] in a pattern means ASCII letters only, whatever the locale (bash >= 5.0 does this
# by default; 4.3 and 4.4 need it said).
shopt -s globasciiranges 2>/dev/null

die() { # die CODE MESSAGE
    printf 'coord-run: %s\n' "$2" >&2
    [ -n "${ON_DIE:-}" ] && "$ON_DIE" "$1" "$2"
    exit "$1"
}

json_str() { # json_str VAR TEXT: set VAR to TEXT as a JSON string literal, without forking
    local t=${2//\\/\\\\}
    t=${t//\"/\\\"}
    t=${t//$'\n'/\\n}
    t=${t//$'\t'/\\t}
    t=${t//$'\r'/\\r}
    t=${t//[[:cntrl:]]/?}
    printf -v "$1" '"%s"' "$t"
}

shown() { # shown VAR TEXT: set VAR to TEXT cut short and with control characters as '?'
    local t=${2:0:120}
    printf -v "$1" '%s' "${t//[[:cntrl:]]/?}"
}

# The one definition of an assignment id on a machine (coordlib.assignment.ID_PATTERN,
# [A-Za-z0-9][A-Za-z0-9_-]{0,99}): two patterns, matched without a fork, so the status
# probe can check every run dir's name.
ID_HEAD='[A-Za-z0-9]*' ID_BAD='*[!A-Za-z0-9_-]*'
valid_id() { # valid_id TEXT -> status 0 when TEXT is an assignment id
    [[ $1 == $ID_HEAD && $1 != $ID_BAD ]] && ((${#1} <= 100))
}

# A count of bytes or a byte offset: plain decimal, no sign, no leading zero (bash reads
# 010 as octal), short enough not to overflow.
valid_num() { # valid_num TEXT -> status 0 when TEXT is a plain decimal number
    case $1 in 0) return 0 ;; "" | 0* | *[!0-9]*) return 1 ;; esac
    ((${#1} <= 18))
}

need_id() { # need_id VERB TEXT: exit 2 unless TEXT is an assignment id
    valid_id "$2" && return 0
    local s
    shown s "$2"
    die 2 "$1: '$s' is not an assignment id (letters, digits, '-' and '_', like api-42-1f3a)"
}

need_num() { # need_num VERB WHAT TEXT: exit 2 unless TEXT is a plain decimal number
    valid_num "$3" && return 0
    local s
    shown s "$3"
    die 2 "$1: $2 '$s' is not a number"
}

need_word() { # need_word VERB WHAT TEXT CHOICE...: exit 2 unless TEXT is one of the choices
    local verb=$1 what=$2 text=$3 c s
    shift 3
    for c in "$@"; do [ "$text" = "$c" ] && return 0; done
    shown s "$text"
    die 2 "$verb: $what '$s' is not one of: $*"
}

need_shape() { # need_shape VERB WHAT TEXT FIRST REST MAX: exit 2 unless TEXT is a FIRST
    # character then REST characters (bracket sets, like A-Za-z0-9), MAX in all at most
    case $3 in [$4]*) case ${3:1} in *[!$5]*) ;; *) ((${#3} <= $6)) && return 0 ;; esac ;; esac
    local s
    shown s "$3"
    die 2 "$1: bad $2 '$s'"
}

need_path() { # need_path VERB WHAT TEXT: exit 2 if TEXT is empty or would read as an option
    local s
    case $3 in "" | -*) shown s "$3" && die 2 "$1: $2 must be a path, not '$s'" ;; esac
}

sq() { # sq VAR TEXT: set VAR to TEXT single-quoted for any POSIX shell (dash too)
    printf -v "$1" "'%s'" "${2//\'/\'\\\'\'}"
}

home_path() { # home_path VAR PATH: set VAR to PATH with a leading "~" or "~/" made $HOME, no fork
    case $2 in
        "~") printf -v "$1" '%s' "$HOME" ;;
        "~/"*) printf -v "$1" '%s/%s' "$HOME" "${2#\~/}" ;;
        *) printf -v "$1" '%s' "$2" ;;
    esac
}

BOOT_ID=unknown
read -r BOOT_ID 2>/dev/null </proc/sys/kernel/random/boot_id

proc_start() { # set PSTART to the start time (clock ticks since boot) of pid $1, no fork
    local f
    PSTART=""
    read -r -a f 2>/dev/null </proc/"$1"/stat || return 1
    # field 2 (comm) has no spaces for our processes, so field 3 (state) is index 2 and
    # field 22 (start time) is index 21.  A zombie has ended, whoever has yet to reap it.
    [ "${f[2]}" != Z ] || return 1
    PSTART=${f[21]}
}

launcher_alive() { # launcher_alive RUN_DIR -> status 0 when its launcher still runs
    pid_file_alive "$1/launcher.pid"
}

pid_file_alive() { # pid_file_alive FILE -> status 0 when the process it names (pid, boot, start) lives
    local pid boot start state pstart
    read -r pid boot start 2>/dev/null <"$1" || return 1
    [ "$boot" = "$BOOT_ID" ] || return 1
    # As proc_start, inline (status probes call this for every run): a gone process has no
    # stat file, a zombie has ended, and another process behind a reused pid started later.
    read -r _ _ state _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ pstart _ 2>/dev/null </proc/"$pid"/stat ||
        return 1
    [ "$state" != Z ] && [ "$pstart" = "$start" ]
}

wt_lock() { # wt_lock WORKDIR WORKTREE: print the lock file that one worker per worktree holds
    printf '%s/locks/wt-%s.lock' "$1" "$(printf '%s' "$2" | cksum | cut -d' ' -f1)"
}

live_mark() { # live_mark RUN_DIR: print the marker that lists the run as live (runs/.live/ID)
    printf '%s/.live/%s' "${1%/*}" "${1##*/}"
}

now_ms() { # set NOW to milliseconds on a clock that never steps (uptime), without forking
    local up _
    if read -r up _ 2>/dev/null </proc/uptime; then
        NOW=$((10#${up/./} * 10)) # centiseconds
    else
        local t=${EPOCHREALTIME/[.,]/}
        NOW=$((t / 1000))
    fi
}

# ---------------------------------------------------------------- dispatch
dispatch_failed() { # dispatch_failed CODE MESSAGE: undo what this dispatch made, say why
    if [ "$D_MADE" = 1 ] && [ -d "$D_WT" ]; then
        # The worktree is fresh (nothing of anyone's is in it yet): remove it and its branch,
        # so the same dispatch works again once the cause is fixed.
        git -C "$D_REPO" worktree remove --force "$D_WT" >/dev/null 2>&1
    fi
    if [ "$D_MADE" = 1 ]; then
        git -C "$D_REPO" worktree prune >/dev/null 2>&1
        git -C "$D_REPO" branch -D "$D_BRANCH" >/dev/null 2>&1
    fi
    # Record the failure in the run dir for a coordinator that died meanwhile; when even
    # that cannot be written (a full disk) leave nothing half-made behind.
    local msg now=${EPOCHREALTIME/,/.}
    json_str msg "$2"
    rm -f "$D_RUN/env.fifo" "$D_RUN/dispatch.pid" "${D_RUN%/*}/.live/${D_RUN##*/}"
    printf '{"exit_code":%s,"reason":"dispatch_failed","error":%s,"finished_at":%s}\n' \
        "$1" "$msg" "$now" >"$D_RUN/exit.json.tmp" 2>/dev/null &&
        mv -f "$D_RUN/exit.json.tmp" "$D_RUN/exit.json" 2>/dev/null ||
        rm -rf "$D_RUN"
}

cmd_dispatch() {
    [ $# -eq 12 ] || die 2 "dispatch: expected 12 arguments, got $#"
    need_path dispatch workdir "$1"
    need_id dispatch "$2"
    need_path dispatch "repo path" "$3"
    need_path dispatch worktree "$4"
    # git must never read the branch or the base as an option, nor tmux the socket as a path.
    need_shape dispatch branch "$5" i a-z0-9- 200
    [[ $5 == issue-[0-9]* ]] || die 2 "dispatch: branch '$5' is not issue-<N>[-<slug>][-r<K>]"
    need_shape dispatch "base branch" "$6" A-Za-z0-9_ A-Za-z0-9._/- 200
    need_shape dispatch "tmux socket name" "$7" A-Za-z0-9 A-Za-z0-9_.- 100
    need_shape dispatch "launcher hash" "$8" 0-9a-f 0-9a-f 64
    need_num dispatch "briefing size" "$9"
    need_num dispatch "spec size" "${10}"
    need_num dispatch "launch.env size" "${11}"
    need_word dispatch mode "${12}" new continue
    local workdir id repo wt branch base sock hash nbrief nspec nlaunch mode
    home_path workdir "$1" && home_path repo "$3" && home_path wt "$4"
    id=$2 branch=$5 base=$6 sock=$7 hash=$8 nbrief=$9 nspec=${10} nlaunch=${11} mode=${12}
    local run="$workdir/runs/$id" bin="$workdir/bin/coord-run-$hash"

    command -v tmux >/dev/null 2>&1 || die 20 "tmux is not installed on this machine (apt-get install tmux)"
    command -v git >/dev/null 2>&1 || die 20 "git is not installed on this machine (apt-get install git)"
    # The repo's own git dir (shared by all its worktrees) also holds the dispatch lock, so
    # two workdirs or two coordinators that use one clone never race on git's lock files.
    local gitdir
    gitdir=$(git -C "$repo" rev-parse --git-common-dir 2>/dev/null) ||
        die 10 "$repo is not a git repository on this machine (clone it there, or set repo_paths in coordinator.yml)"
    case $gitdir in /*) ;; *) gitdir="$repo/$gitdir" ;; esac

    # Claim the run directory first (mkdir is atomic) and say who is dispatching it, so a
    # status probe sees a dispatch in flight even if the coordinator that sent it died.
    mkdir -p "$workdir/runs" || die 14 "cannot create $workdir/runs (disk full?)"
    [ -e "$run" ] && die 13 "run directory $run already exists"
    mkdir "$run" 2>/dev/null || die 13 "cannot create the run directory $run (disk full, or it exists)"
    D_RUN=$run D_REPO=$repo D_WT=$wt D_BRANCH=$branch D_MADE=0 ON_DIE=dispatch_failed
    proc_start $$
    printf '%s %s %s\n' "$$" "$BOOT_ID" "$PSTART" >"$run/dispatch.pid" ||
        die 14 "cannot write in $run (disk full?)"
    # The live index: a status reads it instead of every run dir (thousands, in time).
    mkdir -p "$workdir/runs/.live" && : >"$workdir/runs/.live/$id" ||
        die 14 "cannot write in $workdir/runs/.live (disk full?)"

    # Concurrent dispatches to one repo would race on git's own lock files (.git/config).
    mkdir -p "$workdir/locks" || die 14 "cannot create $workdir/locks"
    if command -v flock >/dev/null 2>&1; then
        { exec 9>>"$gitdir/coord-dispatch.lock"; } 2>/dev/null ||
            exec 9>"$workdir/locks/repo-$(printf '%s' "$repo" | cksum | cut -d' ' -f1).lock"
        flock -w 120 9 || die 18 "another dispatch has held the lock on $repo for 120 s"
    fi
    if [ "$mode" = continue ]; then
        [ -d "$wt" ] || die 12 "worktree $wt is gone from this machine; nothing to continue (use coord retry)"
        if command -v flock >/dev/null 2>&1; then
            exec 8>"$(wt_lock "$workdir" "$wt")"
            flock -n 8 || die 19 "another worker is still running in $wt (stop it first)"
            exec 8>&-
        fi
    else
        local start=$base
        if git -C "$repo" remote get-url origin >/dev/null 2>&1; then
            git -C "$repo" fetch --quiet origin "$base" >&2 ||
                die 11 "git fetch origin $base failed in $repo"
            start="origin/$base"
        fi
        if git -C "$repo" show-ref --verify --quiet "refs/heads/$branch"; then
            die 12 "branch $branch already exists in $repo (finish or delete it: git -C $repo branch -D $branch)"
        fi
        mkdir -p "$(dirname "$wt")" || die 14 "cannot create $(dirname "$wt") (disk full?)"
        D_MADE=1 # from here on a failure removes the fresh worktree and branch again
        git -C "$repo" worktree add --quiet -b "$branch" "$wt" "$start" >&2 ||
            die 12 "git worktree add $wt from $start failed in $repo"
    fi
    exec 9>&-

    mkdir -p "$workdir/bin" || die 14 "cannot create $workdir/bin (disk full?)"
    head -c "$nbrief" >"$run/briefing.md" &&
        head -c "$nspec" >"$run/spec.json" &&
        head -c "$nlaunch" >"$run/launch.env" &&
        : >"$run/events.jsonl" && : >"$run/stderr.log" ||
        die 15 "cannot write the run files in $run (disk full?)"
    [ "$(wc -c <"$run/briefing.md")" -eq "$nbrief" ] || die 15 "briefing arrived truncated"
    [ "$(wc -c <"$run/launch.env")" -eq "$nlaunch" ] || die 15 "launch.env arrived truncated (disk full?)"

    if [ ! -x "$bin" ]; then
        printf '%s' "$BASH_EXECUTION_STRING" >"$bin.tmp.$$" && chmod 700 "$bin.tmp.$$" &&
            mv -f "$bin.tmp.$$" "$bin" || die 15 "cannot install the launcher at $bin"
    fi

    mkfifo "$run/env.fifo" || die 15 "cannot create $run/env.fifo"
    local session="coord-$id" qbin qrun
    # tmux runs this with the account's shell, which may be dash: quote for any sh.
    sq qbin "$bin"
    sq qrun "$run"
    # A client that connects while the server is exiting (its last session just ended) is
    # told "server exited unexpectedly" and nothing starts: start again.  A session that did
    # start (it exists, or its launcher has begun) is never started twice.
    local terr="" try
    for try in 1 2 3 4 5; do
        terr=$(tmux -L "$sock" new-session -d -s "$session" -c "$wt" "exec bash $qbin run $qrun" 2>&1) &&
            break
        if tmux -L "$sock" has-session -t "=$session" 2>/dev/null || [ -e "$run/launcher.pid" ]; then
            terr="" && break
        fi
        [ "$try" = 5 ] && { rm -f "$run/env.fifo"; die 16 "tmux could not start session $session: ${terr//$'\n'/ }"; }
        sleep 0.2
    done
    # The launcher blocks opening the FIFO until we write into it; the
    # environment (secrets included) goes from our stdin to its memory and is
    # never stored on disk or put on a command line.
    # timeout must open the FIFO itself: opened by this shell, a launcher that died before
    # opening its end would block the dispatch forever.
    if ! timeout 30 bash --norc -c 'exec cat >"$1"' coord-env "$run/env.fifo"; then
        tmux -L "$sock" kill-session -t "=$session" 2>/dev/null
        die 17 "the launcher did not start within 30 s (see $run/launcher.log)"
    fi
    ON_DIE="" # the launcher runs: from here it records the run's end itself
    local pid="" _b _s
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        read -r pid _b _s <"$run/launcher.pid" 2>/dev/null && break
        sleep 0.05
    done
    printf '{"ok":true,"launcher_pid":%s,"head":"%s"}\n' "${pid:-null}" \
        "$(git -C "$wt" rev-parse HEAD 2>/dev/null)"
}

# ---------------------------------------------------------------- run (launcher)
kill_group() { # kill_group PID: TERM the worker's process group, KILL it after 5 s
    kill -TERM -- -"$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null
    local i
    for i in $(seq 1 50); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL -- -"$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null
}

write_exit() { # write_exit RUN CODE REASON STARTED [EXTRA_JSON_FIELDS]
    local now=$EPOCHREALTIME json
    printf -v json '{"exit_code":%s,"reason":"%s","started_at":%s,"finished_at":%s%s}' \
        "$2" "$3" "$4" "${now/,/.}" "${5:+,$5}"
    # exit.json.next was filled with spaces when the run began: overwriting it in place needs
    # no new disk blocks, so the end is recorded even on a full disk.  (Trailing spaces are
    # JSON whitespace.)
    if [ -f "$1/exit.json.next" ] && printf '%s\n' "$json" 1<>"$1/exit.json.next" &&
        mv -f "$1/exit.json.next" "$1/exit.json"; then
        :
    elif ! { printf '%s\n' "$json" >"$1/exit.json.tmp" && mv -f "$1/exit.json.tmp" "$1/exit.json"; }; then
        return 1
    fi
    rm -f "$(live_mark "$1")" # recorded: no longer live
}

disk_full() { # disk_full DIR: status 0 when DIR's file system has no room left
    local avail
    avail=$(df -P -k "$1" 2>/dev/null | awk 'NR == 2 { print $4 }')
    [ -n "$avail" ] && [ "$avail" -le 16 ]
}

cmd_run() {
    [ $# -eq 1 ] || die 2 "run: expected 1 argument, got $#"
    need_path run "run dir" "$1"
    need_id run "${1##*/}"
    local s
    shown s "$1"
    [[ ${1%/*} == */runs ]] || die 2 "run: '$s' is not WORKDIR/runs/ID"
    [ -d "$1" ] || die 3 "run: no run directory '$s'"
    local run=$1 stop_req=0
    # First of all: a stop that comes while the launcher starts must not kill it unrecorded.
    trap 'stop_req=1' TERM INT HUP
    exec 2>>"$run/launcher.log"
    proc_start $$
    printf '%s %s %s\n' "$$" "$BOOT_ID" "$PSTART" >"$run/launcher.pid"
    printf '%1023s\n' '' >"$run/exit.json.next" 2>/dev/null || rm -f "$run/exit.json.next"
    local started=$EPOCHREALTIME
    started=${started/,/.}

    # launch.env is written by the coordinator with every value quoted by it.
    # shellcheck disable=SC1091
    . "$run/launch.env" || { write_exit "$run" 126 crashed "$started"; exit 126; }
    # The watchdog does arithmetic with these: numbers, or nothing starts.
    if ! valid_num "${COORD_STALL_MS-}" || ! valid_num "${COORD_MAXRT_MS-}" ||
        ! valid_num "${COORD_GRACE_MS-}"; then
        echo "launch.env has a limit that is not a number; not starting the worker" >&2
        write_exit "$run" 126 crashed "$started"
        exit 126
    fi

    # Receive the worker's environment from the coordinator (see dispatch).
    local -a wenv=()
    local rec complete=0
    if exec 3<"$run/env.fifo"; then
        while IFS= read -r -d '' -t 60 rec <&3; do
            if [ "$rec" = "=END" ]; then complete=1; break; fi
            wenv+=("$rec")
        done
        exec 3<&-
    fi
    rm -f "$run/env.fifo"
    if [ "$stop_req" = 1 ] || [ -e "$run/stop" ]; then
        echo "stopped before the worker started" >&2
        write_exit "$run" 143 stopped "$started"
        exit 143
    fi
    if [ "$complete" != 1 ]; then
        echo "environment stream incomplete; not starting the worker" >&2
        write_exit "$run" 125 crashed "$started"
        exit 125
    fi

    local wtx
    home_path wtx "$COORD_WORKTREE"
    # One worker per worktree, so a session is never driven by two processes.  The
    # launcher holds the lock while its worker lives; the worker does not inherit it, so
    # a daemon the worker leaves behind cannot keep the worktree locked forever.
    if command -v flock >/dev/null 2>&1; then
        local workdir=${run%/runs/*}
        mkdir -p "$workdir/locks"
        exec 8>"$(wt_lock "$workdir" "$wtx")"
        if ! flock -n 8; then
            echo "another worker is still running in $COORD_WORKTREE; not starting" >&2
            write_exit "$run" 124 busy "$started"
            exit 124
        fi
    fi


    # Has events.jsonl changed since the last look?  Its mtime against .seen's takes no fork
    # (a poll used to fork a `stat`).  .seen holds one byte, rewritten in place at each look
    # (a write sets the mtime on every file system, and needs no new block on a full disk),
    # and exists before the worker does.  "Not older" looks again at a write made in the
    # clock tick of a touch, so none is missed; before a stall is declared, the file's own
    # mtime is stat'ed once, in case the clock stepped back.  No room for .seen: stat sizes.
    local seen="$run/.seen" by_mtime=1 changed mtime
    printf x >"$seen" 2>/dev/null || by_mtime=0

    (
        # A clean, stated environment: a few basics kept, then the machine's env.
        keep=()
        for v in HOME USER LOGNAME PATH SHELL LANG LC_ALL TZ TMPDIR; do
            [ -n "${!v+x}" ] && keep+=("$v=${!v}")
        done
        while IFS= read -r v; do unset "$v" 2>/dev/null; done < <(compgen -e)
        for kv in "${keep[@]}" "${wenv[@]}"; do export "${kv?}"; done
        cd "$wtx" || exit 127
        # The prompt on stdin, from its file: as an argument it would be read as an option
        # when it starts with "-", fail past 128 KiB, and show in `ps` to every user.
        exec setsid "${COORD_CMD[@]}" -p "${COORD_ARGS[@]}" \
            <"$run/briefing.md" >>"$run/events.jsonl" 2>>"$run/stderr.log" 8>&-
    ) &
    local wpid=$!
    unset wenv
    printf '%s\n' "$wpid" >"$run/worker.pid"

    local reason=exited last_size=-1 size last_change result_at=0 start_ms NOW rc=""
    local fast_wait=0 # `wait -n -p` needs bash 5.1
    if ((BASH_VERSINFO[0] > 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] >= 1))); then
        fast_wait=1
    fi
    now_ms
    start_ms=$NOW last_change=$NOW
    while kill -0 "$wpid" 2>/dev/null; do
        now_ms
        if [ "$stop_req" = 1 ] || [ -e "$run/stop" ]; then
            reason=stopped
            kill_group "$wpid"
            break
        fi
        changed=0
        if ((by_mtime)) && ! [ "$run/events.jsonl" -ot "$seen" ]; then
            printf x 1<>"$seen" 2>/dev/null
            changed=1
        elif ((!by_mtime)); then
            size=$(stat -c %s "$run/events.jsonl" 2>/dev/null || echo 0)
            [ "$size" != "$last_size" ] && last_size=$size changed=1
        elif ((NOW - last_change >= COORD_STALL_MS)); then
            # About to call it a stall: was the file written within the window, by its own
            # mtime?  (After the clock steps back, new writes look older than .seen.)
            mtime=$(stat -c %Y "$run/events.jsonl" 2>/dev/null || echo 0)
            if ((${EPOCHREALTIME%[.,]*} - mtime < COORD_STALL_MS / 1000)); then
                printf x 1<>"$seen" 2>/dev/null
                changed=1
            fi
        fi
        if ((changed)); then
            last_change=$NOW
            if [ "$result_at" = 0 ] && tail -n 1 "$run/events.jsonl" | grep -q '"type":"result"'; then
                result_at=$NOW
            fi
        fi
        if [ "$result_at" != 0 ] && ((NOW - result_at >= COORD_GRACE_MS)); then
            reason=result_grace_kill
        elif ((NOW - last_change >= COORD_STALL_MS)); then
            reason=stalled
        elif ((NOW - start_ms >= COORD_MAXRT_MS)); then
            reason=timed_out
        fi
        if [ "$reason" != exited ]; then
            kill_group "$wpid"
            break
        fi
        if ((fast_wait)); then
            # Sleep, but wake the moment the worker exits, so its end is recorded at once.
            local sp fin=""
            sleep "$COORD_POLL" &
            sp=$!
            wait -n -p fin "$wpid" "$sp"
            local st=$?
            [ "${fin:-}" = "$wpid" ] && rc=$st # wait -p leaves fin unset when a signal came
            kill "$sp" 2>/dev/null
            wait "$sp" 2>/dev/null
            [ -n "$rc" ] && break
        else
            sleep "$COORD_POLL"
        fi
    done
    if [ -z "$rc" ]; then
        wait "$wpid"
        rc=$?
    fi
    local more=""
    if [ "$rc" != 0 ] && disk_full "$run"; then
        more='"disk_full":true'
    fi
    write_exit "$run" "$rc" "$reason" "$started" "$more" ||
        echo "cannot write exit.json (disk full?)" >&2
    exit "$rc"
}

# ---------------------------------------------------------------- status
cmd_status() { # status WORKDIR SOCKET [live|all] [ID:OFFSET:MAX ...]
    [ $# -ge 2 ] || die 2 "status: expected WORKDIR SOCKET [live|all] [ID:OFFSET:MAX ...]"
    need_path status workdir "$1"
    need_shape status "tmux socket name" "$2" A-Za-z0-9 A-Za-z0-9_.- 100 # (unused: see below)
    local workdir mode=all
    home_path workdir "$1"
    shift 2
    case ${1:-} in live | all) mode=$1 && shift ;; esac
    local -A want=() maxb=() sizes=()
    local spec sid rest s
    for spec in "$@"; do # ID:OFFSET:MAX, split without a here-string (a temp file each)
        case $spec in *:*:*) ;; *) shown s "$spec" && die 2 "status: '$s' is not ID:OFFSET:MAX" ;; esac
        sid=${spec%%:*} rest=${spec#*:}
        need_id status "$sid"
        need_num status offset "${rest%%:*}"
        need_num status "byte limit" "${rest#*:}" # (a third ':' makes it no number)
        want[$sid]=${rest%%:*} maxb[$sid]=${rest#*:}
    done
    printf 'coord-probe 1 boot=%s now=%s\n' "$BOOT_ID" "${EPOCHREALTIME/,/.}"
    # (No `tmux list-sessions`: liveness is the launcher's process and exit.json, and the
    # tmux client would cost a fork and a socket round trip on every status.)
    # First every run's exit record and liveness (builtins only, no fork per run) ...
    local d id ex alive disp size off max n sz path out=""
    local -a ids=() exits=() states=() sized=() dirs=() stale=()
    if [ "$mode" = live ]; then
        # The runs asked about, and those the live index lists (dispatch adds a run, its
        # end removes it): never a walk through every run dir there has ever been.
        local -A pick=()
        for id in "${!want[@]}"; do pick[$id]=1; done
        for d in "$workdir"/runs/.live/*; do
            [ -e "$d" ] && pick[${d##*/}]=1
        done
        for id in "${!pick[@]}"; do dirs+=("$workdir/runs/$id/"); done
    else
        dirs=("$workdir"/runs/*/)
    fi
    for d in "${dirs[@]}"; do
        d=${d%/}
        id=${d##*/}
        # Not an id, not a run of ours: its name is never used as a key.  (valid_id inline:
        # the call would cost more than the match, on every run.)
        [[ $id == $ID_HEAD && $id != $ID_BAD ]] && ((${#id} <= 100)) || continue
        ex="" alive=0 disp=0
        if [ ! -f "$d/exit.json" ]; then
            if pid_file_alive "$d/launcher.pid"; then # (launcher_alive, a call less per run)
                alive=1
            elif [ ! -d "$d" ]; then
                [ "$mode" = live ] && [ -z "${want[$id]+x}" ] && stale+=("$workdir/runs/.live/$id")
                continue # the glob matched nothing, or the run dir is gone
            elif pid_file_alive "$d/dispatch.pid"; then
                disp=1 # a dispatch still on its way (its process lives, no launcher yet)
            fi
        fi
        # Looked at again once the launcher is found gone: it may have ended in between.
        if ((!alive && !disp)) && [ -f "$d/exit.json" ]; then
            if [ -n "${want[$id]+x}" ]; then
                IFS= read -r ex <"$d/exit.json"
            elif [ "$mode" = live ]; then
                stale+=("$workdir/runs/.live/$id") # ended, yet still listed as live
                continue
            else
                ex='{"reason":"ended"}' # only told apart from running ones
            fi
        elif ((!alive && !disp)) && [ "$mode" = live ] && [ -z "${want[$id]+x}" ]; then
            # Dead with no exit record (the machine rebooted): not live, whatever the index
            # says.  A board that knows the run asks about it; `resume` walks every run.
            stale+=("$workdir/runs/.live/$id")
            continue
        fi
        ids+=("$id") exits+=("$ex") states+=("$alive $disp")
        if [ -n "${want[$id]+x}" ] || [ "$alive" = 1 ]; then
            sized+=("$d/events.jsonl")
        fi
    done
    # ... then the sizes of the events files wanted, in one find.  Sizes are read after the
    # exit records, so a run that has ended reports every event it wrote before its end.
    if ((${#sized[@]})); then
        while read -r sz path; do
            path=${path%/events.jsonl}
            sizes[${path##*/}]=$sz
        done < <(find "${sized[@]}" -maxdepth 0 -printf '%s %p\n' 2>/dev/null)
    fi
    # The lines collect in `out` and leave in one write (a printf each is a write each).
    local i
    for i in "${!ids[@]}"; do
        id=${ids[$i]} ex=${exits[$i]}
        alive=${states[$i]% *} disp=${states[$i]#* }
        size=${sizes[$id]:--1}
        out+="run $id alive=$alive size=$size dispatching=$disp"$'\n'"exit $ex"$'\n'
        if [ -n "${want[$id]+x}" ]; then
            off=${want[$id]} max=${maxb[$id]} n=$((size - off))
            ((n < 0)) && n=0
            ((n > max)) && n=$max
            out+="events $off $n"$'\n'
            if ((n > 0)); then
                printf '%s' "$out"
                out=""
                tail -c +"$((off + 1))" "$workdir/runs/$id/events.jsonl" | head -c "$n"
            fi
            out+=$'\n'
            unset "want[$id]"
        fi
    done
    for id in "${!want[@]}"; do
        out+="missing $id"$'\n'
    done
    printf '%send\n' "$out"
    if ((${#stale[@]})); then
        rm -f -- "${stale[@]}"
    fi
}

# ---------------------------------------------------------------- stop
cmd_stop() {
    [ $# -eq 2 ] || die 2 "stop: expected WORKDIR ID, got $# arguments"
    need_path stop workdir "$1"
    need_id stop "$2"
    local workdir id run pid _rest
    home_path workdir "$1"
    id=$2 run="$workdir/runs/$2"
    [ -d "$run" ] || die 3 "no run $id on this machine"
    : >"$run/stop"
    if launcher_alive "$run"; then
        read -r pid _rest <"$run/launcher.pid"
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 150); do
            [ -f "$run/exit.json" ] && break
            sleep 0.1
        done
    fi
    cat "$run/exit.json" 2>/dev/null || echo '{}'
}

# ---------------------------------------------------------------- clean
linked_worktree() { # linked_worktree DIR -> status 0 when DIR is the top of a linked (not main) worktree
    (
        cd "$1" 2>/dev/null || exit 1
        here=$(pwd -P)
        { read -r top && read -r gd && read -r cm; } < <(git rev-parse --show-toplevel --git-dir --git-common-dir 2>/dev/null)
        [ -n "${cm:-}" ] || exit 1
        [ "$(cd "$top" && pwd -P)" = "$here" ] || exit 1 # a subdirectory of some checkout
        gd=$(cd "$gd" && pwd -P) && cm=$(cd "$cm" && pwd -P) || exit 1
        [ "$gd" != "$cm" ] # the main checkout's git dir is its common dir
    )
}

run_busy() { # run_busy RUN_DIR WORKTREE: status 0, with BUSY saying why, while the run lives
    local run=$1 pid cwd wt
    BUSY=""
    if [ ! -f "$run/exit.json" ]; then
        pid_file_alive "$run/launcher.pid" && BUSY="its launcher is running" && return 0
        pid_file_alive "$run/dispatch.pid" && BUSY="its dispatch is on its way" && return 0
    fi
    # A worker can outlive its launcher (killed, or the machine's tmux server gone).  With
    # no worktree to tell it by, a live pid is enough to leave the run alone.
    if read -r pid 2>/dev/null <"$run/worker.pid" && kill -0 "$pid" 2>/dev/null; then
        [ -z "$2" ] && BUSY="its worker (pid $pid) may still be running" && return 0
        cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) && wt=$(cd "$2" 2>/dev/null && pwd -P) &&
            case $cwd/ in "$wt"/*) BUSY="its worker (pid $pid) is still running" && return 0 ;; esac
    fi
    return 1
}

worktree_unsafe() { # worktree_unsafe WT: status 0, with CN saying why, when removing WT could lose work
    local dirty n gd f
    if ! dirty=$(git -C "$1" status --porcelain --untracked-files=all 2>&1); then
        CN="git status failed: ${dirty//$'\n'/ }" && return 0
    fi
    if [ -n "$dirty" ]; then
        n=${dirty//[!$'\n']/}
        CN="$((${#n} + 1)) uncommitted or untracked file(s): commit or remove them, then clean again"
        return 0
    fi
    if ! git -C "$1" symbolic-ref -q HEAD >/dev/null 2>&1; then
        CN="HEAD is detached: commits made there are on no branch (check one out, then clean)"
        return 0
    fi
    gd=$(git -C "$1" rev-parse --absolute-git-dir 2>/dev/null) || { CN="no git dir" && return 0; }
    for f in rebase-merge rebase-apply MERGE_HEAD CHERRY_PICK_HEAD REVERT_HEAD BISECT_LOG; do
        [ -e "$gd/$f" ] && CN="a ${f,,} is in progress: finish or abort it, then clean" && return 0
    done
    return 1
}

clean_worktree() { # clean_worktree WORKDIR WORKTREE MODE: set CW (what happened) and CN (why)
    local workdir=$1 wt=$2 mode=$3 root phys lk="" out
    CW="" CN=""
    [ -n "$wt" ] || { CW=none && return; }
    case $wt in
        "$workdir"/worktrees/?*) ;;
        *) CW=refused CN="not under $workdir/worktrees: coord removes only worktrees it made" && return ;;
    esac
    case /$wt/ in */../* | */./*) CW=refused CN="the path has . or .. in it" && return ;; esac
    [ -e "$wt" ] || { CW=missing && return; }
    # Physically under the worktrees dir too: a symlink there must not lead anywhere else.
    root=$(cd "$workdir/worktrees" 2>/dev/null && pwd -P) && phys=$(cd "$wt" 2>/dev/null && pwd -P)
    case $phys in
        "$root"/?*) ;;
        *) CW=refused CN="it resolves outside $workdir/worktrees (a symlink?)" && return ;;
    esac
    if ! linked_worktree "$wt"; then
        CW=refused CN="not a linked git worktree (coord never removes a main checkout)"
        return
    fi
    # Hold the worktree's lock (the one each launcher holds while its worker lives) from the
    # checks to the removal, so no worker can start in it meanwhile.
    if command -v flock >/dev/null 2>&1 && mkdir -p "$workdir/locks" 2>/dev/null; then
        { exec {lk}>"$(wt_lock "$workdir" "$wt")"; } 2>/dev/null || lk=""
        if [ -n "$lk" ] && ! flock -n "$lk"; then
            exec {lk}>&-
            CW=kept CN="a worker is still running in it" && return
        fi
    fi
    # git (and anything it starts) must not inherit the lock.
    if [ -n "$lk" ]; then
        remove_worktree "$wt" "$phys" "$mode" {lk}>&-
        exec {lk}>&-
    else
        remove_worktree "$wt" "$phys" "$mode"
    fi
}

remove_worktree() { # remove_worktree WT PHYSICAL_PATH MODE: set CW and CN
    local wt=$1 pat=$2 pids out
    # Any process of ours working in it (a worker that outlived its launcher, a daemon it
    # left, a continued session's worker): keep it.  One find over /proc's cwd links.
    pat=${pat//\\/\\\\} pat=${pat//\*/\\*} pat=${pat//\?/\\?} pat=${pat//\[/\\[}
    pids=$(find /proc/[0-9]*/cwd -maxdepth 0 \( -lname "$pat" -o -lname "$pat/*" \) \
        -printf '%h ' 2>/dev/null)
    if [ -n "$pids" ]; then
        pids=${pids//\/proc\//}
        CW=kept CN="processes are running in it (pid ${pids% }): stop them, then clean again"
    elif worktree_unsafe "$wt"; then
        CW=kept
    elif [ "$mode" = check ]; then
        CW=would_remove
    elif out=$(git -C "$wt" worktree remove "$wt" 2>&1); then
        # Without --force, git itself refuses a worktree with changes or a lock: a last
        # guard.  Ignored files (build output, caches) go with the worktree.
        CW=removed
    else
        CW=kept CN="git worktree remove: ${out//$'\n'/ }"
    fi
}

clean_run() { # clean_run RUN_DIR MODE KEEP_RUNS: set CR (the run has ended: see run_busy)
    local run=$1
    if [ ! -d "$run" ]; then
        CR=missing
    elif [ "$3" = 1 ]; then
        CR=kept
    elif [ "$2" = check ]; then
        CR=would_remove
    elif rm -rf -- "$run" "$(live_mark "$run")"; then
        CR=removed
    else
        CR=kept
    fi
}

cmd_clean() { # clean WORKDIR MODE KEEP_RUNS; stdin: ID NUL WORKTREE NUL, per finished run
    [ $# -eq 3 ] || die 2 "clean: expected WORKDIR MODE KEEP_RUNS, got $# arguments"
    need_path clean workdir "$1"
    need_word clean mode "$2" remove check
    need_word clean keep_runs "$3" 0 1
    local workdir mode=$2 keep=$3 id wt line CW CN CR BUSY
    home_path workdir "$1"
    workdir=${workdir%/}
    while IFS= read -r -d '' id && IFS= read -r -d '' wt; do
        if ! valid_id "$id"; then # one record refused, the others still cleaned
            json_str line "$id"
            printf '{"id":%s,"worktree":"refused","run":"refused","note":"not a run id"}\n' "$line"
            continue
        fi
        home_path wt "$wt"
        if run_busy "$workdir/runs/$id" "$wt"; then
            json_str line "$BUSY"
            printf '{"id":"%s","worktree":"%s","run":"running","note":%s}\n' \
                "$id" "$([ -n "$wt" ] && echo kept || echo none)" "$line"
            continue
        fi
        clean_worktree "$workdir" "$wt" "$mode"
        clean_run "$workdir/runs/$id" "$mode" "$keep"
        json_str line "$CN"
        printf '{"id":"%s","worktree":"%s","run":"%s","note":%s}\n' "$id" "$CW" "$CR" "$line"
    done
    printf 'end\n'
}

# ---------------------------------------------------------------- tail
cmd_tail() {
    [ $# -ge 3 ] && [ $# -le 5 ] || die 2 "tail: expected WORKDIR ID OFFSET [FILE [FOLLOW]]"
    need_path tail workdir "$1"
    need_id tail "$2"
    need_num tail offset "$3"
    need_word tail file "${4-events.jsonl}" events.jsonl stderr.log launcher.log
    need_word tail follow "${5-1}" 0 1
    local workdir id off file follow run
    home_path workdir "$1"
    id=$2 off=$3 file=${4-events.jsonl} follow=${5-1}
    run="$workdir/runs/$id"
    [ -d "$run" ] || die 3 "no run $id on this machine"
    [ -e "$run/$file" ] || : >>"$run/$file"
    if [ "$follow" = 1 ] && launcher_alive "$run"; then
        # `tail --pid=<launcher>` would end only once tmux reaps the launcher, seen 1.5 s
        # after it exited. A waiter of our own is reaped at once, so the watch ends as soon
        # as exit.json lands (tail drains the file before it goes).
        (
            while [ ! -e "$run/exit.json" ] && launcher_alive "$run"; do
                sleep 0.05
            done
        ) &
        local waiter=$! tp rc
        tail -c +"$((off + 1))" -s 0.1 -F --pid="$waiter" "$run/$file" 2>/dev/null &
        tp=$!
        wait "$tp"
        rc=$?
        kill "$waiter" 2>/dev/null
        exit "$rc"
    fi
    exec tail -c +"$((off + 1))" "$run/$file"
}

verb=${1:-}
shift || true
case $verb in
    dispatch) cmd_dispatch "$@" ;;
    run) cmd_run "$@" ;;
    status) cmd_status "$@" ;;
    stop) cmd_stop "$@" ;;
    tail) cmd_tail "$@" ;;
    clean) cmd_clean "$@" ;;
    *) die 2 "unknown verb '$verb' (expected dispatch, run, status, stop, tail or clean)" ;;
esac
