# coord-run's waiting verb, sent after common.sh like remote.sh's (protocol.py declares it).
#
#   await    WORKDIR SECONDS [ID]...   block until one of the runs ends (its exit.json is
#            written, or its launcher is gone), or SECONDS pass; a "tick" record every
#            AWAIT_TICK_S seconds meanwhile, so a waiter whose coordinator went away dies on
#            its next write instead of waiting out SECONDS
#
# A coordinator holds one of these per machine between passes: it hears a run's end as it
# happens (within AWAIT_POLL_S), with no status command per poll.  Builtins only while it
# waits: no fork per look.

# ---------------------------------------------------------------- await
AWAIT_POLL_S=0.1 # how often the exit records are looked for
AWAIT_TICK_S=2   # how often a tick is written (a dead reader ends the waiter)
cmd_await() { # await WORKDIR SECONDS [ID]...
    need_args await $# 2 "WORKDIR SECONDS [ID]..." 1
    need_path await workdir "$1"
    need_num await seconds "$2"
    local workdir id sfd now until tick_at look=0 seconds=$2
    home_path workdir "$1"
    local -a ids=()
    shift 2
    for id in "$@"; do
        need_id await "$id"
        ids+=("$id")
    done
    now=${EPOCHREALTIME/[.,]*/}
    until=$((now + seconds)) tick_at=$((now + AWAIT_TICK_S))
    # A pipe nobody writes into: `read -t` on it sleeps without a fork.
    exec {sfd}<> <(:)
    printf '%s await\n' "$PROTOCOL"
    while :; do
        for id in "${ids[@]}"; do
            if [ -e "$workdir/runs/$id/exit.json" ]; then
                printf 'ended %s\nend\n' "$id"
                return 0
            fi
            # Every second, also a launcher that died with no exit record (or a run dir
            # gone): something for a status to settle.
            if ((look % 10 == 0)) && ! pid_file_alive "$workdir/runs/$id/launcher.pid" &&
                ! pid_file_alive "$workdir/runs/$id/dispatch.pid"; then
                [ -e "$workdir/runs/$id/exit.json" ] && continue # ended meanwhile: next look
                printf 'gone %s\nend\n' "$id"
                return 0
            fi
        done
        look=$((look + 1))
        now=${EPOCHREALTIME/[.,]*/}
        ((now < until)) || break
        if ((now >= tick_at)); then
            printf 'tick %s\n' "$now" || exit 0 # the reader is gone
            tick_at=$((now + AWAIT_TICK_S))
        fi
        read -r -t "$AWAIT_POLL_S" -u "$sfd" _
    done
    printf 'end\n'
}
