# coord-run's common part: what both of the scripts that run on a worker machine need.
#
# Nothing of ours is installed as a service there.  Two scripts, each this file followed by
# its own text (coordlib.runtime.protocol puts them together):
#
#   remote.sh    the verbs (dispatch, status, stop, tail, clean): sent as the argument of
#                `bash -c` with every remote command, so each operation costs one command
#                and there is nothing to keep in sync.
#   launcher.sh  the launcher + watchdog that tmux keeps alive: dispatch receives its text
#                on stdin and saves it once per version as $WORKDIR/bin/coord-launcher-<hash>.
#
# coordlib/runtime/protocol.py declares the protocol these scripts implement: every verb's
# arguments, its answer's framing, the exit codes, the reasons in exit.json and the names
# under the workdir.  tests/test_protocol.py reads the scripts to check they agree with it.
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

# The first line of every answer (protocol.PROTOCOL_VERSION); then records, then "end".
PROTOCOL="coord-run 2"

need_args() { # need_args VERB COUNT FIXED USAGE [GROUP]: exit 2 unless COUNT is FIXED, plus
    # any number of GROUP-sized groups when GROUP is given
    if [ -z "${5:-}" ]; then
        [ "$2" -eq "$3" ] && return 0
    elif (($2 >= $3 && ($2 - $3) % $5 == 0)); then
        return 0
    fi
    die 2 "$1: expected $4, got $2 arguments"
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

wt_lock() { # wt_lock VAR WORKDIR WORKTREE: set VAR to the lock file one worker per worktree holds
    # Named by the worktree's path, percent-encoded ("%" as %25, "/" as %2F; no fork: every
    # launcher takes it as it starts); a path too long for a file name, by its checksum.
    local name=${3//%/%25}
    name=${name//\//%2F}
    if ((${#name} > 200)); then
        name=$(printf '%s' "$3" | cksum) && name=${name%% *}
    fi
    printf -v "$1" '%s/locks/wt-%s.lock' "$2" "$name"
}

repo_lock() { # repo_lock GITDIR WORKDIR REPO: lock fd 9 (dispatch, test and stack share it); 1: timed out
    # git's own lock files (.git/config, worktrees) race under concurrent worktree adds; the
    # lock lives in the repo's git dir, else (not writable) under the workdir.
    command -v flock >/dev/null 2>&1 || return 0
    { exec 9>>"$1/coord-dispatch.lock"; } 2>/dev/null ||
        exec 9>"$2/locks/repo-$(printf '%s' "$3" | cksum | cut -d' ' -f1).lock"
    flock -w 120 9
}

live_mark() { # live_mark RUN_DIR: print the marker that lists the run as live (runs/.live/ID)
    printf '%s/.live/%s' "${1%/*}" "${1##*/}"
}
