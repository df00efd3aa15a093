# coord-run's clean verb, sent after common.sh like remote.sh's (protocol.py declares it).
#
#   clean    WORKDIR MODE KEEP_RUNS RESCUE   stdin: ID NUL WORKTREE NUL per ended run
#            Removes (MODE remove) or checks (MODE check) each worktree coord made that holds
#            no one's work, after the workspace's archive script, and each run dir (unless
#            KEEP_RUNS=1); with RESCUE=1 a worktree with uncommitted files or a detached HEAD
#            has its work saved at refs/coord/rescue/ID first, then goes too.  A record per
#            run.  Never a main checkout, never a branch, never live work.

# ---------------------------------------------------------------- clean
linked_worktree() { # linked_worktree DIR -> status 0 when DIR is the top of a linked (not main) worktree
    ( # (a subshell: the cd stays in it)
        local here top="" gd="" cm=""
        cd "$1" 2>/dev/null && here=$(pwd -P) &&
            { read -r top && read -r gd && read -r cm; } < <(git rev-parse --show-toplevel --git-dir --git-common-dir 2>/dev/null) &&
            [ -n "$cm" ] && [ "$(cd "$top" && pwd -P)" = "$here" ] && # not a subdirectory of some checkout
            gd=$(cd "$gd" && pwd -P) && cm=$(cd "$cm" && pwd -P) &&
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
    # (UNSAFE says which: dirty and detached work a rescue saves; the others it never touches)
    local dirty n gd f
    UNSAFE=other
    if ! dirty=$(git -C "$1" status --porcelain --untracked-files=all 2>&1); then
        CN="git status failed: ${dirty//$'\n'/ }" && return 0
    fi
    if [ -n "$dirty" ]; then
        n=${dirty//[!$'\n']/}
        UNSAFE=dirty
        CN="$((${#n} + 1)) uncommitted or untracked file(s): commit or remove them (or clean --rescue), then clean again"
        return 0
    fi
    # A detached HEAD (a review's worktree is one) loses nothing while a branch holds it.
    if ! git -C "$1" symbolic-ref -q HEAD >/dev/null 2>&1 &&
        [ -z "$(git -C "$1" for-each-ref --count=1 --contains HEAD refs/heads 2>/dev/null)" ]; then
        UNSAFE=detached
        CN="HEAD is detached: commits made there are on no branch (check one out, or clean --rescue)"
        return 0
    fi
    gd=$(git -C "$1" rev-parse --absolute-git-dir 2>/dev/null) || { CN="no git dir" && return 0; }
    for f in rebase-merge rebase-apply MERGE_HEAD CHERRY_PICK_HEAD REVERT_HEAD BISECT_LOG; do
        [ -e "$gd/$f" ] && CN="a ${f,,} is in progress: finish or abort it, then clean" && return 0
    done
    return 1
}

clean_worktree() { # clean_worktree WORKDIR WORKTREE MODE RESCUE ID: set CW (what happened), CN (why), RESCUED
    local workdir=$1 wt=$2 mode=$3 root phys lk="" out
    CW="" CN="" RESCUED=""
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
        local lock
        wt_lock lock "$workdir" "$wt"
        { exec {lk}>"$lock"; } 2>/dev/null || lk=""
        if [ -n "$lk" ] && ! flock -n "$lk"; then
            exec {lk}>&-
            CW=kept CN="a worker is still running in it" && return
        fi
    fi
    # git (and anything it starts) must not inherit the lock.
    if [ -n "$lk" ]; then
        remove_worktree "$wt" "$phys" "$mode" "$4" "$5" "$workdir" {lk}>&-
        exec {lk}>&-
    else
        remove_worktree "$wt" "$phys" "$mode" "$4" "$5" "$workdir"
    fi
}

archive() { # archive WT RUN_DIR: run the workspace's archive script in WT (best effort)
    # (The script was kept with the run when its worktree was made: see workspace.sh.)
    local t=600 rc=0
    [ -f "$2/archive.sh" ] || return 0
    read -r t 2>/dev/null <"$2/archive.timeout"
    valid_num "$t" && ((t > 0)) || t=600
    # A confined run's (its settings.json says so) runs in the kernel sandbox, or not at all.
    # What it keeps goes to COORD_ARCHIVE_DIR (archives/ID in the workdir), which outlives
    # the worktree; confined, that and the worktree are all it may write.
    local confined=0 script dest="${2%/runs/*}/archives/${2##*/}"
    [ -f "$2/settings.json" ] && confined=1
    mkdir -p "$dest" 2>/dev/null || dest=""
    if ! sandbox_for_run "$confined" "$2" "$1" ${dest:+"$dest"}; then
        echo "coord: worker.confine is on but bubblewrap is missing: archive not run" >>"$2/archive.log"
        ARCHIVED=29
        return 0
    fi
    script=$(<"$2/archive.sh") || script=""
    (cd "$1" && { [ -z "$SANDBOX_TMP" ] || export TMPDIR=$SANDBOX_TMP; } &&
        COORD_WORKTREE=$1 COORD_ARCHIVE_DIR=$dest exec timeout --kill-after=10 "$t" "${SANDBOX[@]}" bash -c "$script") \
        </dev/null >>"$2/archive.log" 2>&1 || rc=$?
    ARCHIVED=$rc
}

remove_worktree() { # remove_worktree WT PHYSICAL_PATH MODE RESCUE ID WORKDIR: set CW, CN and RESCUED
    local wt=$1 pat=$2 mode=$3 pids out force=""
    # Any process of ours working in it (a worker that outlived its launcher, a daemon it
    # left, a continued session's worker): keep it.  One find over /proc's cwd links.
    pat=${pat//\\/\\\\} pat=${pat//\*/\\*} pat=${pat//\?/\\?} pat=${pat//\[/\\[}
    pids=$(find /proc/[0-9]*/cwd -maxdepth 0 \( -lname "$pat" -o -lname "$pat/*" \) \
        -printf '%h ' 2>/dev/null)
    if [ -n "$pids" ]; then
        pids=${pids//\/proc\//}
        CW=kept CN="processes are running in it (pid ${pids% }): stop them, then clean again"
    elif worktree_unsafe "$wt" && { [ "$4" != 1 ] || [ "$UNSAFE" = other ]; }; then
        CW=kept
    elif [ "$mode" = check ]; then
        CW=would_remove
        [ "$4" = 1 ] && [ -n "$CN" ] && CN="would save its work at refs/coord/rescue/$5 first: $CN"
    else
        if [ "$4" = 1 ] && [ -n "$CN" ]; then
            # Its work is saved first (a commit of the whole tree on its HEAD), or it stays.
            save_rescue "$wt" "refs/coord/rescue/$5" "$6/locks/rescue-$5.index" \
                "coord: work left in $wt, saved as it was cleaned" ||
                { CW=kept CN="could not save its work at refs/coord/rescue/$5: $CN" && return; }
            RESCUED="refs/coord/rescue/$5" CN="" force=--force
        fi
        archive "$wt" "$6/runs/$5"
        # Without --force, git itself refuses a worktree with changes or a lock: a last
        # guard (given only once a rescue ref holds them).  Ignored files (build output,
        # caches) go with the worktree.
        if out=$(git -C "$wt" worktree remove $force "$wt" 2>&1); then
            CW=removed
        else
            CW=kept CN="git worktree remove: ${out//$'\n'/ }"
        fi
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

cmd_clean() { # clean WORKDIR MODE KEEP_RUNS RESCUE; stdin: ID NUL WORKTREE NUL, per finished run
    need_args clean $# 4 "WORKDIR MODE KEEP_RUNS RESCUE"
    need_path clean workdir "$1"
    need_word clean mode "$2" remove check
    need_word clean keep_runs "$3" 0 1
    need_word clean rescue "$4" 0 1
    local workdir mode=$2 keep=$3 rescue=$4 id wt line saved CW CN CR BUSY RESCUED UNSAFE ARCHIVED
    home_path workdir "$1"
    workdir=${workdir%/}
    printf '%s clean\n' "$PROTOCOL"
    while IFS= read -r -d '' id && IFS= read -r -d '' wt; do
        if ! valid_id "$id"; then # one record refused, the others still cleaned
            json_str line "$id"
            printf 'run {"id":%s,"worktree":"refused","run":"refused","note":"not a run id"}\n' "$line"
            continue
        fi
        home_path wt "$wt"
        if run_busy "$workdir/runs/$id" "$wt"; then
            json_str line "$BUSY"
            printf 'run {"id":"%s","worktree":"%s","run":"running","note":%s}\n' \
                "$id" "$([ -n "$wt" ] && echo kept || echo none)" "$line"
            continue
        fi
        ARCHIVED=""
        clean_worktree "$workdir" "$wt" "$mode" "$rescue" "$id"
        clean_run "$workdir/runs/$id" "$mode" "$keep"
        json_str line "$CN"
        saved=null
        [ -n "$RESCUED" ] && saved="\"$RESCUED\""
        printf 'run {"id":"%s","worktree":"%s","run":"%s","note":%s,"rescue":%s,"archive":%s}\n' \
            "$id" "$CW" "$CR" "$line" "$saved" "${ARCHIVED:-null}"
    done
    printf 'end\n'
}

