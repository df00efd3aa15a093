# coord-run's verbs about a machine itself rather than its runs: how healthy it is, and
# setting it up.  Sent like remote.sh's (see protocol.remote_script): the common part, then
# what this file has before its first section (the parts the verbs share), the verb's own
# section, then remote.sh's verb table.
#
#   doctor WORKDIR MIN_FREE_KB [REPO_PATH]...
#        stdin: the machine's claude command, each word ending in a NUL, then an empty word;
#        then the machine's env as a dispatch sends it (NAME=VALUE NUL ..., "=END" NUL).
#        Looks and changes nothing (but what `claude auth status` writes in the user's home
#        itself): one "check NAME ok|warn|fail DETAIL" record per check.  The tools coord
#        runs itself (bash, git, tmux, flock) are looked up as a dispatch finds them; claude
#        in the environment a worker gets (a few basics, then the machine's env), which holds
#        the API key: it stays in this process's memory, never on a command line or disk.
#   setup DRY_RUN [CHECK_SIZE RUN_SIZE TIMEOUT]...
#        stdin: per step, its check command then its run command (sized; 0: no run).
#        Runs each check in the home dir; one that fails gets its run (unless DRY_RUN=1), and
#        then its check again.  One "step INDEX state=STATE N" record per step, with the last
#        (at most MACHINE_TAIL) bytes of what its commands printed.
#
# Neither takes anything from its arguments but words checked here.  The commands a setup
# runs come from the coordinator's playbook (its own config, like a test's commands), on
# stdin; the values it put in them (paths, URLs) were quoted there.

read_sized() { # read_sized VAR N: set VAR to exactly N bytes of stdin, or status 1
    local LC_ALL=C _text="" # C: N counts bytes, and bytes pass as they are
    if (($2 > 0)); then
        IFS= read -r -d '' -N "$2" _text
    fi
    # A command cut short (or with a NUL, which read drops) would run as something else.
    [ "${#_text}" -eq "$2" ] && printf -v "$1" '%s' "$_text"
}

# ---------------------------------------------------------------- doctor
one_line() { # one_line VAR TEXT: set VAR to TEXT on one line, control characters as '?', cut short
    local t=${2//$'\n'/ }
    t=${t//[[:cntrl:]]/?}
    printf -v "$1" '%s' "${t:0:300}"
}

human_kb() { # human_kb VAR KIB: set VAR to KIB in words (12 KiB, 340 MiB, 1.5 GiB)
    if (($2 >= 1048576)); then
        printf -v "$1" '%d.%d GiB' $(($2 / 1048576)) $(($2 % 1048576 * 10 / 1048576))
    elif (($2 >= 1024)); then
        printf -v "$1" '%d MiB' $(($2 / 1024))
    else
        printf -v "$1" '%d KiB' "$2"
    fi
}

doctor_says() { # doctor_says NAME ok|warn|fail TEXT: one record of the doctor's answer
    local d
    one_line d "$3"
    D_SAID+=("$1 $2 $d")
}

read_claude_and_env() { # the claude command's words, then the env records, from stdin; 1: cut short
    local word rec
    D_CLAUDE=() D_ENV=()
    while :; do
        IFS= read -r -d '' word || return 1
        [ -n "$word" ] || break
        D_CLAUDE+=("$word")
    done
    while IFS= read -r -d '' rec; do
        [ "$rec" = "=END" ] && return 0
        # (a name as protocol.encode_env writes it: anything else is a stream gone wrong)
        [[ $rec == [A-Za-z_]*=* && ${rec%%=*} != *[!A-Za-z0-9_]* ]] || return 1
        D_ENV+=("$rec")
    done
    return 1
}

as_worker() { # as_worker SECONDS COMMAND...: run COMMAND with the environment a worker gets
    # As the launcher builds it: a few basics kept, everything else dropped, then the
    # machine's env.  timeout is found on this PATH, COMMAND on the worker's.
    local seconds=$1
    shift
    (
        keep=()
        for v in HOME USER LOGNAME PATH SHELL LANG LC_ALL TZ TMPDIR; do
            [ -n "${!v+x}" ] && keep+=("$v=${!v}")
        done
        while IFS= read -r v; do unset "$v" 2>/dev/null; done < <(compgen -e)
        # (quieter CLIs: no update check, no telemetry; the machine's env may say otherwise)
        export DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
        for kv in "${keep[@]}" "${D_ENV[@]}"; do export "${kv?}"; done
        exec "$D_TIMEOUT" -k 2 "$seconds" "$@"
    ) </dev/null 2>&1
}

worker_var() { # worker_var VAR NAME: set VAR to NAME's value in the worker's environment
    local kv value=""
    [ "$2" = HOME ] && value=$HOME
    for kv in "${D_ENV[@]}"; do
        [ "${kv%%=*}" = "$2" ] && value=${kv#*=}
    done
    printf -v "$1" '%s' "$value"
}

doctor_tool() { # doctor_tool NAME COMMAND...: NAME's version (COMMAND's first line), or that it is missing
    local name=$1 out
    shift
    if ! command -v "$name" >/dev/null 2>&1; then
        doctor_says "$name" fail "not installed (not on PATH $PATH)"
        return 0
    fi
    out=$("$@" 2>&1 </dev/null)
    doctor_says "$name" ok "${out%%$'\n'*}"
}

doctor_sandbox() { # doctor_sandbox: can Claude Code's sandbox run a command here (no tokens)
    local out
    if ! command -v bwrap >/dev/null 2>&1 || ! command -v socat >/dev/null 2>&1; then
        doctor_says sandbox fail "bubblewrap or socat is not installed: a confined worker cannot start here"
        return 0
    fi
    # What the CLI's sandbox does at its heart: a read-only view of the system, no network.
    if out=$(timeout 10 bwrap --ro-bind / / --dev /dev --proc /proc --unshare-net true 2>&1 </dev/null); then
        doctor_says sandbox ok "bubblewrap runs a sandboxed command ($(bwrap --version 2>/dev/null))"
    else
        doctor_says sandbox fail "bubblewrap cannot make a sandbox here: ${out:0:200}"
    fi
}

doctor_disk() { # doctor_disk WORKDIR MIN_FREE_KB: the workdir's own, and the room on its file system
    local workdir=$1 at=$1 avail="" mount="" free need
    if [ -d "$workdir" ]; then
        if [ -w "$workdir" ]; then
            doctor_says workdir ok "$workdir"
        else
            doctor_says workdir fail "$workdir is not writable by $(id -un 2>/dev/null)"
        fi
    elif [ -e "$workdir" ]; then
        doctor_says workdir fail "$workdir is not a directory"
    else
        doctor_says workdir ok "$workdir (not made yet: the first dispatch, or coord setup, makes it)"
    fi
    while [ ! -d "$at" ]; do # the nearest directory that is there: its file system
        case $at in */*) at=${at%/*} && at=${at:-/} ;; *) at=. ;; esac
    done
    { read -r _ && read -r _ _ _ avail _ mount; } < <(df -Pk -- "$at" 2>/dev/null)
    human_kb need "$2"
    if ! valid_num "$avail"; then
        doctor_says disk fail "df could not measure the file system of $at"
    elif ((avail < $2)); then
        human_kb free "$avail"
        doctor_says disk fail "$free free on $mount (for $workdir), under the $need asked for"
    else
        human_kb free "$avail"
        doctor_says disk ok "$free free on $mount (at least $need asked for)"
    fi
}

doctor_runs() { # doctor_runs WORKDIR: the worktrees, and the live runs nothing runs any more
    local workdir=$1 n=0 wt size mark id run words
    local -a stale=()
    for wt in "$workdir/worktrees"/*/*/; do
        [ -d "$wt" ] && n=$((n + 1))
    done
    if ((n == 0)); then
        doctor_says worktrees ok "none"
    else
        size=$("$D_TIMEOUT" 10 du -sk -- "$workdir/worktrees" 2>/dev/null)
        size=${size%%[[:space:]]*}
        if valid_num "$size"; then
            human_kb words "$size"
        else
            words="a size du could not tell within 10 s"
        fi
        doctor_says worktrees ok "$n worktree(s), $words, in $workdir/worktrees"
    fi
    for mark in "$workdir/runs/.live"/*; do
        id=${mark##*/}
        valid_id "$id" || continue
        run="$workdir/runs/$id"
        [ -e "$run/exit.json" ] && continue
        launcher_alive "$run" && continue
        pid_file_alive "$run/dispatch.pid" && continue
        stale+=("$id")
    done
    if ((${#stale[@]} == 0)); then
        doctor_says stale_runs ok "none"
    else
        doctor_says stale_runs warn "${#stale[@]} run(s) marked live whose launcher is gone, with no exit.json: ${stale[*]:0:5}"
    fi
}

doctor_user() { # how the workers' account stands: root, one that may sudo, or a plain one
    local user uid groups g
    user=$(id -un 2>/dev/null) uid=$(id -u 2>/dev/null) groups=" $(id -Gn 2>/dev/null) "
    if [ "$uid" = 0 ]; then
        doctor_says worker_user warn "workers run as root (the login user)"
        return 0
    fi
    for g in sudo wheel admin; do
        if [[ $groups == *" $g "* ]]; then
            doctor_says worker_user warn "workers run as $user (the login user, uid $uid), who is in group $g"
            return 0
        fi
    done
    doctor_says worker_user ok "workers run as $user (the login user, uid $uid), in no sudo group"
}

doctor_claude() { # the machine's claude command: runnable, and logged in, without spending a token
    local out rc name=${D_CLAUDE[0]:-} value home config re
    if [ -z "$name" ]; then
        doctor_says claude fail "no claude command was given"
        doctor_says claude_login fail "claude cannot run"
        return 0
    fi
    out=$(as_worker 10 "${D_CLAUDE[@]}" --version)
    rc=$?
    case $rc in
        0) doctor_says claude ok "$name: ${out%%$'\n'*}" ;;
        127) doctor_says claude fail "$name is not on the PATH a worker gets" ;;
        126) doctor_says claude fail "$name cannot be run (not executable)" ;;
        124 | 137) doctor_says claude fail "$name --version gave no answer within 10 s" ;;
        *) doctor_says claude fail "$name --version failed with status $rc: ${out:0:200}" ;;
    esac
    if ((rc != 0)); then
        doctor_says claude_login fail "claude cannot run"
        return 0
    fi
    # `claude auth status` says whether it is logged in, without a request to the API; a CLI
    # that has no such command is judged by what it would log in with.
    out=$(as_worker 10 "${D_CLAUDE[@]}" --help)
    if [[ $out == *$'\n  auth '* ]]; then
        out=$(as_worker 10 "${D_CLAUDE[@]}" auth status)
        rc=$?
        if ((rc == 0)); then
            re='"authMethod": *"([A-Za-z0-9_.-]+)"'
            value=""
            [[ $out =~ $re ]] && value=${BASH_REMATCH[1]}
            re='"apiKeySource": *"([A-Za-z0-9_.-]+)"'
            [[ $out =~ $re ]] && value+=" from ${BASH_REMATCH[1]}"
            doctor_says claude_login ok "logged in${value:+ ($value)}, as claude auth status says"
        else
            doctor_says claude_login fail "not logged in, as claude auth status says"
        fi
        return 0
    fi
    for name in ANTHROPIC_API_KEY ANTHROPIC_AUTH_TOKEN CLAUDE_CODE_OAUTH_TOKEN; do
        worker_var value "$name"
        if [ -n "$value" ]; then
            doctor_says claude_login ok "$name is set in the worker's environment"
            return 0
        fi
    done
    worker_var home HOME
    worker_var config CLAUDE_CONFIG_DIR
    config=${config:-$home/.claude}
    if [ -s "$config/.credentials.json" ]; then
        doctor_says claude_login ok "credentials in $config/.credentials.json"
    else
        doctor_says claude_login fail "no API key in the worker's environment and no $config/.credentials.json"
    fi
}

doctor_repos() { # doctor_repos REPO_PATH...: each a git checkout with an origin (its URL is not said)
    local i=0 path repo
    for path in "$@"; do
        home_path repo "$path"
        if ! command -v git >/dev/null 2>&1; then
            doctor_says "repo.$i" fail "git is not installed"
        elif ! git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
            doctor_says "repo.$i" fail "$repo is not a git checkout"
        elif ! git -C "$repo" remote get-url origin >/dev/null 2>&1; then
            doctor_says "repo.$i" fail "$repo has no remote origin"
        else
            doctor_says "repo.$i" ok "$repo"
        fi
        i=$((i + 1))
    done
}

cmd_doctor() {
    need_args doctor $# 2 "WORKDIR MIN_FREE_KB [REPO_PATH]..." 1
    need_path doctor workdir "$1"
    need_num doctor "minimum free KiB" "$2"
    local workdir min_kb=$2 path line
    for path in "${@:3}"; do
        need_path doctor "repo path" "$path"
    done
    home_path workdir "$1"
    read_claude_and_env || die 15 "doctor: the claude command or the environment arrived truncated"
    D_SAID=()
    D_TIMEOUT=$(command -v timeout) || D_TIMEOUT=timeout

    if ((BASH_VERSINFO[0] > 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] >= 3))); then
        doctor_says bash ok "bash $BASH_VERSION"
    else
        doctor_says bash fail "bash $BASH_VERSION is too old (4.3 or newer is needed)"
    fi
    doctor_tool git git --version
    doctor_tool tmux tmux -V
    doctor_tool flock flock --version
    doctor_sandbox
    doctor_disk "$workdir" "$min_kb"
    doctor_runs "$workdir"
    doctor_user
    doctor_claude
    doctor_repos "${@:3}"
    D_ENV=()

    printf '%s doctor\n' "$PROTOCOL"
    for line in "${D_SAID[@]}"; do
        printf 'check %s\n' "$line"
    done
    printf 'end\n'
}

# ---------------------------------------------------------------- setup
MACHINE_TAIL=2000 # the bytes of a step's output that its record carries (protocol.SETUP_TAIL)

step_run() { # step_run COMMAND SECONDS: run COMMAND as shell in the home dir; STEP_OUT: what it printed
    STEP_OUT=$(
        cd -- "$HOME" 2>/dev/null || cd /
        GIT_TERMINAL_PROMPT=0 exec timeout -k 10 "$2" bash -c "$1" 2>&1 </dev/null
    )
}

step_tail() { # step_tail TEXT: set STEP_TAIL to TEXT's last MACHINE_TAIL bytes, STEP_N to their count
    local LC_ALL=C # ${#…} counts bytes, as the payload's size must
    STEP_TAIL=$1
    ((${#STEP_TAIL} > MACHINE_TAIL)) && STEP_TAIL=${STEP_TAIL: -MACHINE_TAIL}
    STEP_N=${#STEP_TAIL}
}

cmd_setup() {
    need_args setup $# 1 "DRY_RUN [CHECK_SIZE RUN_SIZE TIMEOUT]..." 3
    need_word setup dry_run "$1" 0 1
    local dry=$1 i state out said
    shift
    local -a checks=() runs=() limits=()
    # Every argument checked and every command read before the first one runs.
    while (($# > 0)); do
        need_num setup "check size" "$1"
        need_num setup "run size" "$2"
        need_num setup timeout "$3"
        [ "$3" != 0 ] && ((${#3} <= 9)) || die 2 "setup: timeout '$3' is not a number of seconds from 1 to 999999999"
        read_sized out "$1" || die 15 "setup: a check command arrived truncated"
        checks+=("$out")
        read_sized out "$2" || die 15 "setup: a run command arrived truncated"
        runs+=("$out")
        limits+=("$3")
        shift 3
    done
    command -v timeout >/dev/null 2>&1 || die 20 "timeout (coreutils) is not installed on this machine"

    printf '%s setup\n' "$PROTOCOL"
    for i in "${!checks[@]}"; do
        step_run "${checks[i]}" "${limits[i]}"
        if (($? == 0)); then
            state=ok said=$STEP_OUT
        elif [ -z "${runs[i]}" ]; then
            state=manual said=$STEP_OUT
        elif [ "$dry" = 1 ]; then
            state=would_change said=$STEP_OUT
        elif ! step_run "${runs[i]}" "${limits[i]}"; then
            state=failed said=$STEP_OUT
        else
            said=$STEP_OUT
            if step_run "${checks[i]}" "${limits[i]}"; then
                state=changed
            else
                state=failed
            fi
            said+=${said:+$'\n'}$STEP_OUT
        fi
        step_tail "$said" # the record's payload: the end of what was printed
        printf 'step %s state=%s %s\n%s\n' "$i" "$state" "$STEP_N" "$STEP_TAIL"
    done
    printf 'end\n'
}
