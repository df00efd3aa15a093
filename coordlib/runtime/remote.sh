# coord-run's verbs, sent after common.sh as the argument of `bash -c` with every remote
# command.  protocol.py declares each verb's arguments and its answer; in short:
#
#   dispatch WORKDIR ID REPO_PATH WORKTREE BRANCH BASE SOCKET HASH N_BRIEF N_SPEC N_LAUNCH
#            N_LAUNCHER MODE
#            stdin: briefing, spec.json, launch.env, the launcher (byte counts given), then
#            the worker's environment as NUL-separated NAME=VALUE records ending "=END".
#            MODE "new" makes the worktree on a new branch from origin/BASE; "continue"
#            reuses the existing worktree (a session resumed with guidance, or after a
#            rate limit), and refuses while another worker still holds it; "review" makes
#            it detached at BRANCH's commit (a reviewer's: it neither fetches nor touches
#            the branch, which is the worker's); "claim" is "new" with the branch pushed to
#            origin first; "scratch" has no repo: the run works in its run dir.  A launch.env
#            asking for ports (COORD_WS_PORTS=N) gets a range from the machine's pool.
#   status   WORKDIR SOCKET live|all [ID OFFSET MAX FILES]...   state of every run (live:
#            only the running ones and those asked about), with the new events of those
#            asked, the files their branches changed (FILES=1), and the workdir's disk
#   stop     WORKDIR ID               ask a run to stop and wait for its exit record
#   tail     WORKDIR ID OFFSET FILE FOLLOW  print FILE from byte OFFSET; FOLLOW=1 keeps
#            streaming until the run's launcher exits (raw bytes: no framing)
#   clean                             ended runs' worktrees and run dirs: see clean.sh
#   test, push, stack, land           on a repo's commits and branches: see branch.sh
#   await                             until one of the runs ends: see await.sh
#   doctor, setup                     the machine's health, a playbook's steps: see machine.sh
#   app                               a workspace's run script (a dev server): see app.sh
#
# Every answer but tail's is framed: "$PROTOCOL VERB [KEY=VALUE...]", records, "end".
# A failure is an exit status (protocol.ExitCode) and one "coord-run: ..." line on stderr.

# ---------------------------------------------------------------- dispatch
FETCH_SHARED_S=5 # seconds a fetch of the base is fresh enough for the next dispatch
dispatch_failed() { # dispatch_failed CODE MESSAGE: undo what this dispatch made, say why
    if [ "$D_MADE" = 1 ] && [ -d "$D_WT" ]; then
        # The worktree is fresh (nothing of anyone's is in it yet): remove it and the branch
        # made with it, so the same dispatch works again once the cause is fixed.
        git -C "$D_REPO" worktree remove --force "$D_WT" >/dev/null 2>&1
    fi
    if [ -n "$D_CLAIMED" ]; then
        # The claim pushed to origin goes too, if the branch there is still ours.
        GIT_TERMINAL_PROMPT=0 git -C "$D_REPO" push --quiet --no-verify \
            --force-with-lease="refs/heads/$D_BRANCH:$D_CLAIMED" origin ":refs/heads/$D_BRANCH" \
            >/dev/null 2>&1
    fi
    if [ "$D_MADE" = 1 ]; then
        git -C "$D_REPO" worktree prune >/dev/null 2>&1
        # D_BRANCH is set only when this dispatch made the branch: a review's is the worker's.
        [ -z "$D_BRANCH" ] || git -C "$D_REPO" branch -D "$D_BRANCH" >/dev/null 2>&1
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

# Builtins where a fork would do the same: a burst of dispatches shares the machine's cores.
has_origin() { # has_origin GIT_CONFIG -> status 0 when it defines the remote "origin"
    local line
    while IFS= read -r line; do
        [[ $line == *'[remote "origin"]'* ]] && return 0
    done <"$1"
    return 1
}

has_branch() { # has_branch GIT_DIR BRANCH -> status 0 when refs/heads/BRANCH exists, loose or packed
    [ -e "$1/refs/heads/$2" ] && return 0
    [ -f "$1/packed-refs" ] || return 1
    local sha ref
    while read -r sha ref; do
        [ "$ref" = "refs/heads/$2" ] && return 0
    done <"$1/packed-refs"
    return 1
}

read_exactly() { # read_exactly N FILE: copy exactly N bytes of stdin to FILE (a small part)
    local LC_ALL=C part="" # C: N counts bytes, and bytes pass as they are
    if (($1 > 0)); then
        IFS= read -r -d '' -N "$1" part
    fi
    [ "${#part}" -eq "$1" ] && printf '%s' "$part" >"$2"
}

cmd_dispatch() {
    need_args dispatch $# 13 "WORKDIR ID REPO_PATH WORKTREE BRANCH BASE SOCKET HASH N_BRIEF N_SPEC N_LAUNCH N_LAUNCHER MODE"
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
    need_num dispatch "launcher size" "${12}"
    need_word dispatch mode "${13}" new claim continue review scratch
    local workdir id repo wt branch base sock hash nbrief nspec nlaunch nlauncher mode
    home_path workdir "$1" && home_path repo "$3" && home_path wt "$4"
    id=$2 branch=$5 base=$6 sock=$7 hash=$8 nbrief=$9 nspec=${10} nlaunch=${11}
    nlauncher=${12} mode=${13}
    local run="$workdir/runs/$id" bin="$workdir/bin/coord-launcher-$hash"

    command -v tmux >/dev/null 2>&1 || die 20 "tmux is not installed on this machine (apt-get install tmux)"
    command -v git >/dev/null 2>&1 || die 20 "git is not installed on this machine (apt-get install git)"
    # The repo's own git dir (shared by all its worktrees) also holds the dispatch lock, so
    # two workdirs or two coordinators that use one clone never race on git's lock files.
    # A plain clone's git dir is its .git (seen without a fork); git is asked otherwise.
    local gitdir="$repo/.git"
    if [ "$mode" = scratch ]; then
        # A run with no repo of its own (a planner's ranking): its dir is in its run dir,
        # and goes with it.  The repo and the branch are not used.
        [ "$wt" = "$run/scratch" ] || die 2 "dispatch: a scratch run works in $run/scratch, not $wt"
    elif ! [ -d "$gitdir/objects" ] || ! [ -f "$gitdir/HEAD" ]; then
        gitdir=$(git -C "$repo" rev-parse --git-common-dir 2>/dev/null) ||
            die 10 "$repo is not a git repository on this machine (clone it there, or set repo_paths in coordinator.yml)"
        case $gitdir in /*) ;; *) gitdir="$repo/$gitdir" ;; esac
    fi

    # Claim the run directory first (mkdir is atomic) and say who is dispatching it, so a
    # status probe sees a dispatch in flight even if the coordinator that sent it died.
    # (Every directory it needs, in one mkdir: each fork counts when a burst arrives.)
    mkdir -p "$workdir/runs/.live" "$workdir/locks" "$workdir/bin" ||
        die 14 "cannot create the directories under $workdir (disk full?)"
    [ -e "$run" ] && die 13 "run directory $run already exists"
    mkdir "$run" 2>/dev/null || die 13 "cannot create the run directory $run (disk full, or it exists)"
    D_RUN=$run D_REPO=$repo D_WT=$wt D_BRANCH="" D_MADE=0 D_CLAIMED="" ON_DIE=dispatch_failed
    proc_start $$
    printf '%s %s %s\n' "$$" "$BOOT_ID" "$PSTART" >"$run/dispatch.pid" ||
        die 14 "cannot write in $run (disk full?)"
    # The live index: a status reads it instead of every run dir (thousands, in time).
    : >"$workdir/runs/.live/$id" || die 14 "cannot write in $workdir/runs/.live (disk full?)"

    # Concurrent dispatches to one repo would race on git's own lock files (.git/config).
    if [ "$mode" != scratch ]; then
        repo_lock "$gitdir" "$workdir" "$repo" ||
            die 18 "another dispatch has held the lock on $repo for 120 s"
    fi
    local head="" # the worktree's commit, when known here
    if [ "$mode" = scratch ]; then
        mkdir "$wt" || die 14 "cannot create $wt (disk full?)"
    elif [ "$mode" = continue ]; then
        [ -d "$wt" ] || die 12 "worktree $wt is gone from this machine; nothing to continue (use coord retry)"
        if command -v flock >/dev/null 2>&1; then
            local lock
            wt_lock lock "$workdir" "$wt"
            exec 8>"$lock"
            flock -n 8 || die 19 "another worker is still running in $wt (stop it first)"
            exec 8>&-
        fi
    elif [ "$mode" = review ]; then
        # At the commit the branch names now, detached: the reviewer's commits (if any) and
        # the worker's next ones never mix, and a branch checked out elsewhere is no obstacle.
        head=$(git -C "$repo" rev-parse --verify --quiet "refs/heads/$branch^{commit}") ||
            die 12 "branch $branch does not exist in $repo: nothing to review"
        # (the undo removes the worktree at $wt: it must be this dispatch's own)
        [ -e "$wt" ] && die 12 "$wt already exists (a worktree of another run?)"
        mkdir -p "${wt%/*}" || die 14 "cannot create ${wt%/*} (disk full?)"
        D_MADE=1 # from here on a failure removes the fresh worktree (never the branch)
        git -C "$repo" worktree add --quiet --detach "$wt" "$head" >&2 ||
            die 12 "git worktree add --detach $wt at $branch ($head) failed in $repo"
    else
        # A burst of dispatches to one clone shares one fetch: one made in the last few
        # seconds (under this same lock) is as fresh as another.  fetched: TIME BASE START
        local start=$base fetched="$gitdir/coord-fetched" f_at="" f_base="" f_start="" now
        read -r f_at f_base f_start 2>/dev/null <"$fetched"
        now=${EPOCHREALTIME/[.,]*/}
        if [ "$f_base" = "$base" ] && valid_num "$f_at" && ((now - f_at < FETCH_SHARED_S)); then
            start=$f_start
        else
            if has_origin "$gitdir/config"; then
                git -C "$repo" fetch --quiet origin "$base" >&2 ||
                    die 11 "git fetch origin $base failed in $repo"
                start="origin/$base"
            fi
            printf '%s %s %s\n' "$now" "$base" "$start" 2>/dev/null >"$fetched"
        fi
        if has_branch "$gitdir" "$branch"; then
            die 12 "branch $branch already exists in $repo (finish or delete it: git -C $repo branch -D $branch)"
        fi
        [ -e "$wt" ] && die 12 "$wt already exists (a worktree of another run?)"
        mkdir -p "${wt%/*}" || die 14 "cannot create ${wt%/*} (disk full?)"
        D_MADE=1 D_BRANCH=$branch # from here on a failure removes the fresh worktree and branch
        git -C "$repo" worktree add --quiet -b "$branch" "$wt" "$start" >&2 ||
            die 12 "git worktree add $wt from $start failed in $repo"
    fi
    exec 9>&-
    if [ "$mode" = claim ] && has_origin "$gitdir/config"; then
        # The issue's claim across coordinators: the branch is created on origin, which
        # refuses it (atomically: the lease says it must not exist) when another has it.
        local said sha
        sha=$(git -C "$repo" rev-parse --verify --quiet "refs/heads/$branch") ||
            die 12 "branch $branch vanished from $repo"
        said=$(GIT_TERMINAL_PROMPT=0 git -C "$repo" push --porcelain --no-verify \
            --force-with-lease="refs/heads/$branch:" origin \
            "refs/heads/$branch:refs/heads/$branch" 2>&1)
        # Only "[new branch]" is a claim won: "[up to date]" means origin has it already at
        # this very commit (another dispatch from the same base got there first).
        if [[ $said == *"[new branch]"* ]]; then
            D_CLAIMED=$sha
        elif [[ $said == *"[rejected]"* || $said == *"[up to date]"* ||
            $said == *"cannot lock ref"* || $said == *"reference already exists"* ]]; then
            # (the last two: origin was creating it for another push at this very moment)
            die 28 "branch $branch is on origin already: another coordinator (or a person) has claimed this issue; look at that branch, or retry with a fresh one"
        else
            said=${said//$'\n'/ }
            die 24 "could not claim $branch on origin (git push failed: ${said:0:300})"
        fi
    fi

    head -c "$nbrief" >"$run/briefing.md" &&
        read_exactly "$nspec" "$run/spec.json" &&
        read_exactly "$nlaunch" "$run/launch.env" &&
        : >"$run/events.jsonl" && : >"$run/stderr.log" ||
        die 15 "cannot write the run files in $run (disk full?)"
    # A prompt cut short would be obeyed as it is: check it.  (A cut launch.env or
    # environment stream is refused by the launcher, which checks both.)
    [ "$(wc -c <"$run/briefing.md")" -eq "$nbrief" ] || die 15 "briefing arrived truncated"
    # The worktree's ports, when the launch asks for some (COORD_WS_PORTS=N): a range from the
    # machine's pool, which the launcher gives back as the run ends.
    local line want=0 ports="" confine=0
    while IFS= read -r line; do
        case $line in
            COORD_WS_PORTS=*) want=${line#*=} ;;
            COORD_CONFINE=1) confine=1 ;;
        esac
    done <"$run/launch.env"
    # A confined worker needs Claude Code's sandbox, which needs bubblewrap and socat: never
    # a silent run without it.
    if ((confine)) && ! { command -v bwrap && command -v socat; } >/dev/null 2>&1; then
        die 29 "worker.confine is on but this machine cannot sandbox a worker: install bubblewrap and socat (apt-get install bubblewrap socat, or coord setup MACHINE), or set worker.confine: false to run workers unconfined"
    fi
    if valid_num "$want" && ((want > 0 && want <= 1000)); then
        alloc_ports "$workdir" "$id" "$want" ||
            die 14 "no free range of $want ports in $PORT_BASE-$PORT_MAX on this machine (workspace.ports)"
        printf '%s\n' "$PORTS" >"$run/ports" || die 15 "cannot write in $run (disk full?)"
        ports=${PORTS/ /-}
    fi

    # The launcher travels with every dispatch (a few KB), and is saved once per version:
    # its name carries the hash of its text, checked here so a bad copy is never kept.
    if [ -x "$bin" ]; then
        head -c "$nlauncher" >/dev/null || die 15 "the launcher did not arrive"
    else
        local sum
        head -c "$nlauncher" >"$bin.tmp.$$" &&
            sum=$(sha256sum <"$bin.tmp.$$") && [ "${sum:0:${#hash}}" = "$hash" ] &&
            chmod 700 "$bin.tmp.$$" && mv -f "$bin.tmp.$$" "$bin" || {
            rm -f "$bin.tmp.$$"
            die 15 "cannot install the launcher at $bin (it arrived truncated, or the disk is full)"
        }
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
        terr=$(tmux -L "$sock" new-session -d -s "$session" -c "$wt" "exec bash $qbin $qrun" 2>&1) &&
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
    if ! timeout 30 tee "$run/env.fifo" >/dev/null; then
        tmux -L "$sock" kill-session -t "=$session" 2>/dev/null
        die 17 "the launcher did not start within 30 s (see $run/launcher.log)"
    fi
    ON_DIE="" # the launcher runs: from here it records the run's end itself
    local pid="" _b _s
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        read -r pid _b _s <"$run/launcher.pid" 2>/dev/null && break
        sleep 0.05
    done
    # The worktree's commit, read from git's files (no fork): .git names the worktree's git
    # dir, whose HEAD names the branch, whose ref (loose: just made) is the commit.
    local wgit="" ref=""
    if [ -z "$head" ] && [ "$mode" != scratch ]; then
        read -r _ wgit 2>/dev/null <"$wt/.git" && read -r _ ref 2>/dev/null <"$wgit/HEAD" &&
            read -r head 2>/dev/null <"$gitdir/$ref" || head=$(git -C "$wt" rev-parse HEAD 2>/dev/null)
    fi
    printf '%s dispatch\nstarted launcher_pid=%s head=%s%s\nend\n' "$PROTOCOL" "$pid" "$head" \
        "${ports:+ ports=$ports}"
}

# ---------------------------------------------------------------- status
stderr_tail() { # stderr_tail FILE: set TAIL to the last 600 bytes of FILE, TAIL_BYTES to its size
    local LC_ALL=C # ${#…} counts bytes, as the payload's size must
    TAIL=$(tail -c 600 "$1" 2>/dev/null | tr -d '\000')
    TAIL_BYTES=${#TAIL}
}

RADAR_MAX=200 # files listed per run by a status (the first; the planner needs no more)
RADAR_EVERY_S=20 # seconds between two readings of one run's files (when its worker wrote since)
DISK_EVERY_S=60 # seconds between measurements of the disk a workdir uses (in the background)

radar_files() { # radar_files RUN_DIR: set FILES to the paths its worktree changed (see radar)
    # Committed or not, since the branch left its base, and new untracked files: one line
    # each, quoted by git where a name is unusual, the first RADAR_MAX.  No optional lock is
    # taken (the worker's own git commands must never meet ours), nothing of the worker's runs.
    # Where the branch left its base is worked out once, and kept as the file's 4th line.
    local wt start base mb="" ref
    FILES=""
    { IFS= read -r wt && IFS= read -r start && IFS= read -r base && { IFS= read -r mb || :; }; } \
        2>/dev/null <"$1/radar" || return 0
    [[ -d $wt && $start =~ ^[0-9a-f]{40,64}$ ]] || return 0
    local -a g=(git -c core.quotePath=true -c core.fsmonitor=false -c core.hooksPath=/dev/null -C "$wt")
    if ! [[ $mb =~ ^[0-9a-f]{40,64}$ ]]; then
        mb=$start
        if [[ $base =~ ^[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$ && $base != *..* ]]; then
            for ref in "refs/remotes/origin/$base" "refs/heads/$base"; do
                mb=$(GIT_OPTIONAL_LOCKS=0 "${g[@]}" merge-base "$ref" "$start" 2>/dev/null) && break
                mb=$start
            done
        fi
        printf '%s\n' "$mb" >>"$1/radar" 2>/dev/null
    fi
    FILES=$({
        GIT_OPTIONAL_LOCKS=0 "${g[@]}" diff --no-renames --name-only "$mb" --
        GIT_OPTIONAL_LOCKS=0 "${g[@]}" ls-files --others --exclude-standard
    } 2>/dev/null | head -n "$RADAR_MAX")
}

radar_cached() { # radar_cached RUN_DIR EVENTS_SIZE: set FILES, read again only when it is due
    # The last reading is kept in radar.files ("SIZE TIME", then the paths), and read again
    # when the worker has written events since and RADAR_EVERY_S have passed: however many
    # coordinators ask (a `coord status` from a shell has no memory of the last), the git
    # commands run at most that often per run.
    local f="$1/radar.files" at="" was="" now=${EPOCHREALTIME%[.,]*}
    local -a kept=()
    if [ -f "$f" ] && mapfile -t kept <"$f" && ((${#kept[@]})); then
        read -r was at <<<"${kept[0]}"
        if valid_num "$at" && { [ "$was" = "$2" ] || ((now - at < RADAR_EVERY_S)); }; then
            FILES=""
            local IFS=$'\n'
            FILES="${kept[*]:1}"
            return 0
        fi
    fi
    radar_files "$1"
    printf '%s %s\n%s%s' "$2" "$now" "$FILES" "${FILES:+$'\n'}" >"$f.$$" 2>/dev/null &&
        mv -f "$f.$$" "$f" 2>/dev/null
}

disk_line() { # disk_line WORKDIR: set DISK to the disk record's words (as last measured), or ""
    # du over every worktree can take seconds: it runs in the background at most once per
    # DISK_EVERY_S, and a status reports what it last found (with when).
    local wd=$1 at="" used="" free="" now=${EPOCHREALTIME%[.,]*}
    local f="$wd/disk"
    DISK=""
    IFS=' ' read -r at used free 2>/dev/null <"$f"
    if ! valid_num "$at" || ((now - at >= DISK_EVERY_S)); then
        # Marked as begun first, so the statuses meanwhile start no other.
        printf '%s %s %s\n' "$now" "${used:--1}" "${free:--1}" 2>/dev/null >"$f"
        (
            u=$(du -skx -- "$wd" 2>/dev/null | cut -f1)
            fr=$(df -Pk -- "$wd" 2>/dev/null | awk 'NR == 2 { print $4 }')
            printf '%s %s %s\n' "${EPOCHREALTIME%[.,]*}" "${u:--1}" "${fr:--1}" >"$f.$$" &&
                mv -f "$f.$$" "$f"
        ) </dev/null >/dev/null 2>&1 &
    fi
    [[ $used =~ ^-?[0-9]+$ && $free =~ ^-?[0-9]+$ ]] && valid_num "$at" &&
        DISK="used_kb=$used free_kb=$free at=$at"
}

cmd_status() { # status WORKDIR SOCKET SCOPE [ID OFFSET MAX FILES]...
    need_args status $# 3 "WORKDIR SOCKET live|all [ID OFFSET MAX FILES]..." 4
    need_path status workdir "$1"
    need_shape status "tmux socket name" "$2" A-Za-z0-9 A-Za-z0-9_.- 100 # (unused: see below)
    need_word status scope "$3" live all
    local workdir mode=$3
    home_path workdir "$1"
    shift 3
    local -A want=() maxb=() sizes=() radar=()
    while (($#)); do # each run asked about: its id, the offset to read from, a byte limit,
        need_id status "$1" # and whether to list the files its branch changed
        need_num status offset "$2"
        need_num status "byte limit" "$3"
        need_word status files "$4" 0 1
        want[$1]=$2 maxb[$1]=$3
        [ "$4" = 1 ] && radar[$1]=1
        shift 4
    done
    printf '%s status boot=%s now=%s\n' "$PROTOCOL" "$BOOT_ID" "${EPOCHREALTIME/,/.}"
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
            if [ -n "${radar[$id]+x}" ] && ((alive)); then
                radar_cached "$workdir/runs/$id" "$size"
                [ -n "$FILES" ] && FILES+=$'\n'
                out+="files ${#FILES}"$'\n'"$FILES"$'\n'
            fi
            if [ -n "$ex" ] && [ -s "$workdir/runs/$id/stderr.log" ]; then
                # An ended run's last words on stderr name what went wrong (a missing
                # command, a crash): its tail goes with its end.  (Ended runs only: rare.)
                stderr_tail "$workdir/runs/$id/stderr.log"
                out+="stderr $TAIL_BYTES"$'\n'"$TAIL"$'\n'
            fi
            unset "want[$id]"
        fi
    done
    for id in "${!want[@]}"; do
        out+="missing $id"$'\n'
    done
    disk_line "$workdir"
    [ -n "$DISK" ] && out+="disk $DISK"$'\n'
    printf '%send\n' "$out"
    if ((${#stale[@]})); then
        rm -f -- "${stale[@]}"
    fi
}

# ---------------------------------------------------------------- stop
cmd_stop() { # stop WORKDIR ID
    need_args stop $# 2 "WORKDIR ID"
    need_path stop workdir "$1"
    need_id stop "$2"
    local workdir id run pid _rest ex=""
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
    [ -f "$run/exit.json" ] && IFS= read -r ex <"$run/exit.json"
    printf '%s stop\nexit %s\nend\n' "$PROTOCOL" "$ex"
}

# ---------------------------------------------------------------- tail
cmd_tail() { # tail WORKDIR ID OFFSET FILE FOLLOW: raw bytes, no framing (a stream has no end)
    need_args tail $# 5 "WORKDIR ID OFFSET FILE FOLLOW"
    need_path tail workdir "$1"
    need_id tail "$2"
    need_num tail offset "$3"
    need_word tail file "$4" events.jsonl stderr.log launcher.log
    need_word tail follow "$5" 0 1
    local workdir id off file follow run
    home_path workdir "$1"
    id=$2 off=$3 file=$4 follow=$5
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

# ---------------------------------------------------------------- verbs
verb=${1:-}
shift || true
case $verb in
    dispatch) cmd_dispatch "$@" ;;
    status) cmd_status "$@" ;;
    stop) cmd_stop "$@" ;;
    tail) cmd_tail "$@" ;;
    clean) cmd_clean "$@" ;;
    test) cmd_test "$@" ;;
    push) cmd_push "$@" ;;
    stack) cmd_stack "$@" ;;
    land) cmd_land "$@" ;;
    await) cmd_await "$@" ;;
    sync) cmd_sync "$@" ;;
    doctor) cmd_doctor "$@" ;;
    setup) cmd_setup "$@" ;;
    app) cmd_app "$@" ;;
    *) shown verb "$verb" && die 2 "unknown verb '$verb' (expected dispatch, status, stop, tail, clean, test, push, stack, land, sync, await, doctor, setup or app)" ;;
esac
