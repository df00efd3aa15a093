# coord-run's launcher, after common.sh: the watchdog that tmux keeps alive, one per run.
#
#   RUN_DIR    (WORKDIR/runs/ID) started by dispatch as `bash WORKDIR/bin/coord-launcher-<hash>
#              RUN_DIR` in the run's tmux session
#
# It reads launch.env (what to start, and the limits), receives the worker's environment
# through env.fifo (never from disk or a command line), starts the worker in its worktree
# with briefing.md on its stdin, watches events.jsonl, and records the run's end in
# exit.json: the exit code and one of the reasons protocol.ExitReason declares.

now_ms() { # set NOW to milliseconds on a clock that never steps (uptime), without forking
    local up _
    if read -r up _ 2>/dev/null </proc/uptime; then
        NOW=$((10#${up/./} * 10)) # centiseconds
    else
        local t=${EPOCHREALTIME/[.,]/}
        NOW=$((t / 1000))
    fi
}

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

worker_env() { # worker_env: make this (sub)shell's environment the worker's, and go on
    # A clean, stated environment: a few basics kept, then the machine's env (wenv), then
    # the worktree's ports.
    local v kv
    local -a keep=()
    for v in HOME USER LOGNAME PATH SHELL LANG LC_ALL TZ TMPDIR; do
        [ -n "${!v+x}" ] && keep+=("$v=${!v}")
    done
    while IFS= read -r v; do unset "$v" 2>/dev/null; done < <(compgen -e)
    for kv in "${keep[@]}" "${wenv[@]}"; do export "${kv?}"; done
    if [ -n "$PORT_FIRST" ]; then
        export COORD_PORT=$PORT_FIRST COORD_PORTS="$PORT_FIRST-$PORT_LAST"
    fi
    # Confined: the API key stays with the CLI, out of every Bash command's environment, and
    # the CLI finds coordlib's bwrap shim first (see confine_shim).
    if [ "${COORD_CONFINE-}" = 1 ]; then
        export CLAUDE_CODE_SUBPROCESS_ENV_SCRUB=1
        [ -n "${CONFINE_SHIM_DIR-}" ] && export PATH="$CONFINE_SHIM_DIR:$PATH"
    fi
    return 0
}

release_ports() { # release_ports WORKDIR: give the run's ports back to the machine's pool
    [ -n "$PORT_FIRST" ] && release_range "$1" "$PORT_FIRST" "$PORT_LAST"
}

disk_full() { # disk_full DIR: status 0 when DIR's file system has no room left
    local avail
    avail=$(df -P -k "$1" 2>/dev/null | awk 'NR == 2 { print $4 }')
    [ -n "$avail" ] && [ "$avail" -le 16 ]
}

# What the worker left behind, checked as its run ends and recorded with that end (exit.json's
# "outcome", read by coordlib.outcomes): the commits it made, the changes it left
# uncommitted (kept in the worktree, and saved at refs/coord/rescue/ID), the files its branch
# changes from its base, and whether the branch still merges onto that base.  Paths are in
# git's quoted form (ASCII only); at most OUTCOME_FILES of them.
OUTCOME_FILES=200
add_path() { # add_path PATH: one more changed file, in outcome's list (capped; its count is not)
    total=$((total + 1))
    ((total <= OUTCOME_FILES)) || return 0
    json_str q "$1"
    files+=${files:+,}$q
}

radar() { # radar RUN_DIR WORKTREE START BASE: write where a status reads the branch's files
    # (the worktree, the commit the worker starts from, and its base branch: the first
    # status that asks works out where the branch left its base; no fork here)
    [ -n "$3" ] || return 0
    printf '%s\n%s\n%s\n' "$2" "$3" "$4" >"$1/radar" 2>/dev/null
}

outcome() { # outcome WORKTREE RUN_DIR START BASE: set OUTCOME to a JSON object, or "" (no repo)
    local wt=$1 run=$2 start=$3 base=$4 head ref="" mb="" commits=null ahead=null
    local conflicts=null rescue=null line path files="" loose="" total=0 dirty=0 untracked=0 q
    # Nothing the worker wrote may run here: no hooks, no fsmonitor command of its making.
    local -a g=(git -c core.quotePath=true -c core.fsmonitor=false -c core.hooksPath=/dev/null
        -c core.untrackedCache=false -C "$wt")
    OUTCOME=""
    head=$("${g[@]}" rev-parse -q --verify 'HEAD^{commit}' 2>/dev/null) || return 0
    if [ -n "$start" ]; then
        commits=$("${g[@]}" rev-list --count "$start..$head" 2>/dev/null) || commits=null
    fi
    if [ -n "$base" ]; then
        for ref in "refs/remotes/origin/$base" "refs/heads/$base" ""; do
            [ -n "$ref" ] && "${g[@]}" rev-parse -q --verify "$ref^{commit}" >/dev/null 2>&1 && break
        done
    fi
    if [ -n "$ref" ] && mb=$("${g[@]}" merge-base "$ref" "$head" 2>/dev/null); then
        ahead=$("${g[@]}" rev-list --count "$mb..$head" 2>/dev/null) || ahead=null
        while IFS= read -r path; do
            [ -n "$path" ] && add_path "$path"
        done < <("${g[@]}" diff --no-renames --name-only "$mb" "$head" -- 2>/dev/null)
        # Does it still merge onto its base (as this machine last fetched it)?  0: cleanly
        # (merge-tree writes the trees it makes into the object store, nothing else).
        "${g[@]}" merge-tree --write-tree "$ref" "$head" >/dev/null 2>&1
        case $? in 0) conflicts=false ;; 1) conflicts=true ;; esac
    fi
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        dirty=$((dirty + 1))
        [ "${line:0:2}" = "??" ] && untracked=$((untracked + 1))
        path=${line:3}
        path=${path##* -> }
        add_path "$path"
        if ((dirty <= OUTCOME_FILES)); then
            json_str q "$path"
            loose+=${loose:+,}$q
        fi
    done < <("${g[@]}" status --porcelain=v1 --untracked-files=all 2>/dev/null)
    for path in "${CONFINE_HIDDEN[@]}"; do # (confined: made under a name the sandbox takes)
        dirty=$((dirty + 1)) untracked=$((untracked + 1))
        add_path "$path"
        json_str q "$path"
        ((dirty <= OUTCOME_FILES)) && loose+=${loose:+,}$q
    done
    if ((dirty > 0)); then
        # Saved without touching the worktree or its index (see save_rescue).
        local name="refs/coord/rescue/${run##*/}"
        save_rescue "$wt" "$name" "$run/rescue.index" \
            "coord: uncommitted work of run ${run##*/}, saved as it ended" && rescue="\"$name\""
    fi
    local s=null m=null
    [ -n "$start" ] && s="\"$start\""
    [ -n "$mb" ] && m="\"$mb\""
    printf -v OUTCOME '{"start":%s,"head":"%s","base":%s,"commits":%s,"ahead":%s,"dirty":%s,"untracked":%s,"files":[%s],"files_total":%s,"uncommitted":[%s],"rescue":%s,"conflicts":%s}' \
        "$s" "$head" "$m" "$commits" "$ahead" "$dirty" "$untracked" "$files" "$total" \
        "$loose" "$rescue" "$conflicts"
}

cmd_run() { # run RUN_DIR
    need_args run $# 1 "RUN_DIR"
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
    if [ "${COORD_END-}" != 1 ] || ! valid_num "${COORD_STALL_MS-}" ||
        ! valid_num "${COORD_MAXRT_MS-}" || ! valid_num "${COORD_GRACE_MS-}"; then
        echo "launch.env is cut short or has a limit that is not a number; not starting the worker" >&2
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

    local wtx start=""
    home_path wtx "$COORD_WORKTREE"
    # The commit the worker starts from: its outcome counts the commits made since.
    # (A scratch run has no repo: git must not find one around its dir.)
    if [ "$wtx" != "$run/scratch" ]; then
        start=$(git -c core.fsmonitor=false -C "$wtx" rev-parse -q --verify 'HEAD^{commit}' 2>/dev/null)
        radar "$run" "$wtx" "$start" "${COORD_BASE-}"
    fi
    # One worker per worktree, so a session is never driven by two processes.  The
    # launcher holds the lock while its worker lives; the worker does not inherit it, so
    # a daemon the worker leaves behind cannot keep the worktree locked forever.
    if command -v flock >/dev/null 2>&1; then
        local workdir=${run%/runs/*} lock
        [ -d "$workdir/locks" ] || mkdir -p "$workdir/locks"
        wt_lock lock "$workdir" "$wtx"
        exec 8>"$lock"
        if ! flock -n 8; then
            echo "another worker is still running in $COORD_WORKTREE; not starting" >&2
            write_exit "$run" 124 busy "$started"
            exit 124
        fi
    fi
    # The worktree's ports, if its dispatch gave it some (ports: FIRST LAST): the worker, its
    # setup and `coord run-app` see them as COORD_PORT and COORD_PORTS.
    PORT_FIRST="" PORT_LAST=""
    read -r PORT_FIRST PORT_LAST 2>/dev/null <"$run/ports"
    valid_num "$PORT_FIRST" && valid_num "$PORT_LAST" || PORT_FIRST="" PORT_LAST=""
    local WS_JSON=""
    if [ "${COORD_WS-}" = 1 ] && ! ws_prepare "$run" "$wtx" 8>&-; then
        echo "coord-run: the workspace's setup failed (see setup.log); the worker was not started" >&2
        write_exit "$run" 121 setup_failed "$started" "$WS_JSON"
        release_ports "${run%/runs/*}"
        exit 121
    fi
    if [ "${COORD_CONFINE-}" = 1 ]; then
        if ! confine_prepare "$run" "$wtx" 8>&-; then
            echo "cannot write the worker's sandbox settings in $run (disk full?); not starting" >&2
            write_exit "$run" 125 crashed "$started"
            release_ports "${run%/runs/*}"
            exit 125
        fi
        COORD_ARGS+=(--settings "$run/settings.json")
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
        worker_env
        exec 2>>"$run/stderr.log" # what goes wrong from here is the run's to report
        cd "$wtx" || { echo "coord-run: the worktree $wtx is gone; the worker cannot start" >&2 && exit 122; }
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
    CONFINE_HIDDEN=()
    [ "${COORD_CONFINE-}" = 1 ] && confine_tidy "$wtx" && confine_hidden "$wtx"
    local more="" OUTCOME="" base=${COORD_BASE-}
    # (launch.env's base is the coordinator's word, yet checked as every ref here is)
    [[ $base =~ ^[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$ && $base != *..* ]] || base=""
    [ "$wtx" = "$run/scratch" ] || outcome "$wtx" "$run" "$start" "$base" 8>&-
    if [ "$rc" != 0 ] && disk_full "$run"; then
        more='"disk_full":true'
    fi
    more+=${WS_JSON:+${more:+,}$WS_JSON}
    release_ports "${run%/runs/*}"
    # The end is recorded with its outcome, or (no room for that) without it.
    write_exit "$run" "$rc" "$reason" "$started" "$more${OUTCOME:+${more:+,}\"outcome\":$OUTCOME}" ||
        write_exit "$run" "$rc" "$reason" "$started" "$more" ||
        echo "cannot write exit.json (disk full?)" >&2
    exit "$rc"
}

cmd_run "$@"
