# coord-run's app verb, sent after common.sh like remote.sh's (protocol.py declares it).
#
#   app    WORKDIR ID WORKTREE SOCKET start|stop   start (or stop) the workspace's run script
#          (a dev server a person can look at) in run ID's worktree, in tmux session
#          coord-app-ID on the workers' socket, with a port range of its own
#
# The run script is the one the worktree's workspace had when it was made (runs/ID/app.sh:
# coordinator.yml's repos[].workspace.run, else the repo's .coord/workspace.yml), never one a
# worker wrote later.  Its output goes to runs/ID/app.log.

# ---------------------------------------------------------------- app
cmd_app() { # app WORKDIR ID WORKTREE SOCKET start|stop
    need_args app $# 5 "WORKDIR ID WORKTREE SOCKET start|stop"
    need_path app workdir "$1"
    need_id app "$2"
    need_path app worktree "$3"
    need_shape app "tmux socket name" "$4" A-Za-z0-9 A-Za-z0-9_.- 100
    need_word app action "$5" start stop
    local workdir wt id=$2 sock=$4 run session="coord-app-$2" first last n=10 pid qwt qrun said
    home_path workdir "$1"
    home_path wt "$3"
    run="$workdir/runs/$id"
    [ -d "$run" ] || die 3 "app: no run directory for $id on this machine (cleaned?)"
    if [ "$5" = stop ]; then
        said="state=not_running"
        tmux -L "$sock" kill-session -t "=$session" 2>/dev/null && said="state=stopped"
        read -r first last 2>/dev/null <"$run/app.ports" && release_range "$workdir" "$first" "$last"
        rm -f -- "$run/app.pid" "$run/app.ports"
    elif pid_file_alive "$run/app.pid"; then # once is enough: say where it is
        read -r first last 2>/dev/null <"$run/app.ports"
        said="state=running ports=$first-$last session=$session"
    else
        app_start
        said="state=started ports=$first-$last session=$session"
    fi
    printf '%s app\napp %s\nend\n' "$PROTOCOL" "$said"
}

app_start() { # app_start (cmd_app's): start the run script in its session; set first and last
    [ -f "$run/app.sh" ] ||
        die 2 "app: the workspace has no run script (set repos[].workspace.run in coordinator.yml, or run: in the repo's .coord/workspace.yml; it applies to worktrees made after)"
    [ -d "$wt" ] || die 12 "app: worktree $wt is gone from this machine"
    command -v tmux >/dev/null 2>&1 || die 20 "tmux is not installed on this machine (apt-get install tmux)"
    # A confined run's script (its settings.json says so) runs in the kernel sandbox, as its
    # tests do, or not at all.
    local confined=0 qsb="" q e tmpenv="" qscript
    [ -f "$run/settings.json" ] && confined=1
    sandbox_for_run "$confined" "$run" "$wt" ||
        die 29 "app: worker.confine is on but this machine cannot sandbox the run script: install bubblewrap (apt-get install bubblewrap socat, or coord setup MACHINE)"
    for e in "${SANDBOX[@]}"; do sq q "$e" && qsb+="$q "; done
    [ -z "$SANDBOX_TMP" ] || { sq q "$SANDBOX_TMP" && tmpenv="TMPDIR=$q"; }
    sq qscript "$(<"$run/app.sh")"
    # As many ports as the run had (its range is the workspace's size), else ten.
    read -r first last 2>/dev/null <"$run/ports" && valid_num "$first" && valid_num "$last" &&
        n=$((last - first + 1))
    alloc_ports "$workdir" "$id" "$n" || die 14 "no free range of $n ports in $PORT_BASE-$PORT_MAX on this machine"
    read -r first last <<<"$PORTS"
    printf '%s %s\n' "$first" "$last" >"$run/app.ports"
    sq qwt "$wt"
    sq qrun "$run"
    pid=$(tmux -L "$sock" new-session -d -P -F '#{pane_pid}' -s "$session" -c "$wt" \
        "exec env $tmpenv COORD_PORT=$first COORD_PORTS=$first-$last COORD_WORKTREE=$qwt $qsb bash -c $qscript >>$qrun/app.log 2>&1" 2>&1) ||
        { release_range "$workdir" "$first" "$last"; rm -f -- "$run/app.ports"; die 16 "tmux could not start session $session: ${pid//$'\n'/ }"; }
    if valid_num "$pid" && proc_start "$pid"; then
        printf '%s %s %s\n' "$pid" "$BOOT_ID" "$PSTART" >"$run/app.pid"
    fi
}
