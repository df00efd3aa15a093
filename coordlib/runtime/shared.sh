# Shell that some verbs share and others never need: each section goes with the verbs that
# call it (scripts.py's _HELPERS), and all of it with the launcher, so a status (sent to every
# machine, every pass) carries none of it.  Functions and their constants only.

# ---------------------------------------------------------------- rescue
save_rescue() { # save_rescue WORKTREE REF INDEX MESSAGE: status 0 once REF holds its work
    # Every change in WORKTREE (untracked files too, ignored ones not) becomes a commit on its
    # HEAD, made through the private index INDEX (which must not exist): neither the worktree
    # nor its own index is touched.  Nothing the worktree's owner wrote runs (hooks, fsmonitor).
    local -a g=(git -c core.fsmonitor=false -c core.hooksPath=/dev/null -c core.untrackedCache=false -C "$1")
    local head tree sha ok=1
    head=$("${g[@]}" rev-parse -q --verify 'HEAD^{commit}' 2>/dev/null) || return 1
    if GIT_INDEX_FILE=$3 "${g[@]}" read-tree "$head" 2>/dev/null &&
        GIT_INDEX_FILE=$3 timeout 120 "${g[@]}" add -A . 2>/dev/null &&
        tree=$(GIT_INDEX_FILE=$3 "${g[@]}" write-tree 2>/dev/null) &&
        sha=$(GIT_AUTHOR_NAME=coord GIT_AUTHOR_EMAIL=coord@localhost \
            GIT_COMMITTER_NAME=coord GIT_COMMITTER_EMAIL=coord@localhost \
            "${g[@]}" commit-tree "$tree" -p "$head" -m "$4" 2>/dev/null) &&
        "${g[@]}" update-ref "$2" "$sha" 2>/dev/null; then
        ok=0
    fi
    rm -f "$3"
    return $ok
}

# ---------------------------------------------------------------- ports
# The pool of ports each machine hands out to its live worktrees (dispatch) and apps (app):
# each port taken is a file ports/PORT holding the id of the run that has it, made with
# O_EXCL (noclobber), so two dispatches never take one port, with no lock and no fork.
PORT_BASE=20000
PORT_MAX=29999

port_holder_live() { # port_holder_live WORKDIR ID: status 0 while the run (or its app) holding a port lives
    local d="$1/runs/$2"
    pid_file_alive "$d/app.pid" && return 0
    [ -f "$d/exit.json" ] && return 1
    pid_file_alive "$d/launcher.pid" || pid_file_alive "$d/dispatch.pid"
}

port_claim() { # port_claim WORKDIR PORT ID: status 0 once ports/PORT is ID's
    local f="$1/ports/$2" holder="" rc
    set -C
    { printf '%s\n' "$3" >"$f"; } 2>/dev/null
    rc=$?
    set +C
    ((rc == 0)) && return 0
    # Taken: by a run that lives (it stays), or by one that ended or died (it is free again).
    read -r holder 2>/dev/null <"$f"
    # (Empty: another dispatch made it a moment ago and is writing its id: taken.)
    [ -n "$holder" ] || return 1
    valid_id "$holder" && port_holder_live "$1" "$holder" && return 1
    rm -f -- "$f"
    set -C
    { printf '%s\n' "$3" >"$f"; } 2>/dev/null
    rc=$?
    set +C
    return $rc
}

alloc_ports() { # alloc_ports WORKDIR ID N: set PORTS to "FIRST LAST", N ports no live run holds
    local wd=$1 id=$2 n=$3 base p got
    local -a back=()
    PORTS=""
    [ -d "$wd/ports" ] || mkdir -p "$wd/ports" 2>/dev/null || return 1
    for ((base = PORT_BASE; base + n - 1 <= PORT_MAX; base += n)); do
        got=0
        for ((p = base; p < base + n; p++)); do
            port_claim "$wd" "$p" "$id" || break
            got=$((got + 1))
        done
        if ((got == n)); then
            PORTS="$base $((base + n - 1))"
            return 0
        fi
        # Some of this range is another's: give back what this try took, try the next.
        back=()
        for ((p = base; p < base + got; p++)); do back+=("$wd/ports/$p"); done
        ((${#back[@]})) && rm -f -- "${back[@]}"
    done
    return 1
}

release_range() { # release_range WORKDIR FIRST LAST: give ports FIRST..LAST back to the pool
    local -a files=()
    local p
    valid_num "$2" && valid_num "$3" && (($3 - $2 < 1000)) || return 0
    for ((p = $2; p <= $3; p++)); do files+=("$1/ports/$p"); done
    rm -f -- "${files[@]}"
}

# ---------------------------------------------------------------- sandbox
# Relative to a home: what no confined worker, and no command of its branch, reads.
SECRETS=(.ssh .gnupg .aws .azure .kube .docker/config.json .config/gh .config/gcloud
    .config/hub .git-credentials .netrc .npmrc .pypirc .cargo/credentials
    .cargo/credentials.toml .claude/.credentials.json .claude.json .vault-token)

sandbox_argv() { # sandbox_argv HOME HIDE WRITABLE...: set SANDBOX to a bubblewrap command line
    # that runs a command confined by the kernel: the whole system read-only, but WRITABLE
    # (dirs), HOME's secrets and HIDE (a dir, e.g. coordlib's runs) out of sight; the network
    # as it is.  Where the commands of a worker's branch run (its tests, its workspace's
    # scripts) when worker.confine is on.
    local home=${1%/} hide=$2 p
    shift 2
    SANDBOX=(bwrap --die-with-parent --new-session --ro-bind / / --dev /dev --proc /proc)
    for p in "${SECRETS[@]/#/$home/}" "$hide"; do
        if [ -d "$p" ] && [ ! -L "$p" ]; then
            SANDBOX+=(--tmpfs "$p")
        elif [ -e "$p" ]; then
            SANDBOX+=(--ro-bind /dev/null "$p")
        fi
    done
    for p in "$@"; do SANDBOX+=(--bind "$p" "$p"); done # (after: one may be under HIDE)
}

sandbox_for_run() { # sandbox_for_run CONFINED RUN WT [DIR...]: when CONFINED is 1, set SANDBOX
    # for a command of the run's workspace (its setup, archive or app; WT and DIRs writable)
    # and SANDBOX_TMP to its temp dir; status 1 if bubblewrap is missing (never run such a
    # command unconfined then)
    SANDBOX=() SANDBOX_TMP=""
    [ "$1" = 1 ] || return 0
    command -v bwrap >/dev/null 2>&1 || return 1
    SANDBOX_TMP="$2/tmp"
    mkdir -p "$SANDBOX_TMP" || return 1
    sandbox_argv "$HOME" "${2%/runs/*}/runs" "${@:3}" "$SANDBOX_TMP"
}
