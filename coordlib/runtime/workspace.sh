# coord-run's workspace part of the launcher (common.sh + workspace.sh + launcher.sh): what
# makes a fresh worktree ready to work in before its worker starts.
#
# The scripts come from coordinator.yml (repos[].workspace, in launch.env as COORD_WS_*) or,
# for what it does not set, from the repo's own .coord/workspace.yml as the worktree has it
# (a new worktree is at its base: what the repo's maintainers wrote, not a worker's edit).
# That file is a small YAML, read here with bash builtins:
#
#     setup: npm ci                    # one line, or a block:
#     run: |
#       npm run dev -- --port "$COORD_PORT"
#     archive: ./scripts/save-logs.sh
#     timeout: 300                     # seconds, for setup and archive
#     copy: [.env, config/local.yml]   # or one "- path" a line below `copy:`
#
# (A worktree's ports come from coordinator.yml alone: they are taken before it is made.)
#
# Setup runs in the worktree with the worker's clean environment, COORD_PORT (the first of
# the worktree's ports) and COORD_PORTS (first-last), under a timeout, its output in
# setup.log; a failure ends the run as setup_failed before any worker (and token) starts.

WS_TIMEOUT_DEFAULT=600
WS_LOG_TAIL=2000

ws_unquote() { # ws_unquote VAR TEXT: TEXT without surrounding quotes (YAML's '' and "")
    local t=$2
    t=${t%"${t##*[![:space:]]}"}
    case $t in
        \"*\") t=${t:1:${#t}-2} ;;
        \'*\') t=${t:1:${#t}-2} t=${t//\'\'/\'} ;;
    esac
    printf -v "$1" '%s' "$t"
}

ws_parse() { # ws_parse FILE: set WSF[key] (setup, run, archive, timeout) and WSF_COPY
    local line key val block="" indent="" item
    WSF=() WSF_COPY=()
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        if [ -n "$block" ]; then
            if [[ -z ${line//[[:space:]]/} ]]; then
                [ "$block" != copy ] && WSF[$block]+=$'\n'
                continue
            fi
            if [[ $line == [[:space:]]* ]]; then
                [ -n "$indent" ] || indent=${line%%[![:space:]]*}
                if [ "$block" = copy ]; then
                    item=${line#"${line%%[![:space:]]*}"}
                    [[ $item == "- "* ]] && ws_unquote item "${item#- }" && WSF_COPY+=("$item")
                else
                    WSF[$block]+="${line#"$indent"}"$'\n'
                fi
                continue
            fi
            block="" indent=""
        fi
        [[ $line =~ ^([a-z_]+):[[:space:]]*(.*)$ ]] || continue # comments, anything else
        key=${BASH_REMATCH[1]} val=${BASH_REMATCH[2]}
        case $key in setup | run | archive | timeout | copy) ;; *) continue ;; esac
        case $val in
            "|" | "|-" | "|+" | ">" | ">-") block=$key WSF[$key]="" ;;
            "") [ "$key" = copy ] && block=copy ;;
            "["*"]")
                [ "$key" = copy ] || continue
                local -a items=()
                IFS=, read -r -a items <<<"${val:1:${#val}-2}"
                for item in "${items[@]}"; do
                    item=${item#"${item%%[![:space:]]*}"}
                    ws_unquote item "$item"
                    [ -n "$item" ] && WSF_COPY+=("$item")
                done
                ;;
            *) ws_unquote "WSF[$key]" "$val" ;;
        esac
    done <"$1"
}

ws_path_ok() { # ws_path_ok PATH: status 0 for a plain relative path (no /.. escapes, no leading -)
    [[ -n $1 && $1 != /* && $1 != -* && /$1/ != */../* && /$1/ != */./* && $1 != *$'\n'* ]]
}

ws_copy() { # ws_copy MAIN WT PATH...: copy untracked files from the main checkout, never into git
    local main=$1 wt=$2 f gd ex
    shift 2
    gd=$(git -C "$wt" rev-parse --git-common-dir 2>/dev/null) || return 0
    case $gd in /*) ;; *) gd="$wt/$gd" ;; esac
    ex="$gd/info/exclude"
    for f in "$@"; do
        if ! ws_path_ok "$f"; then
            echo "workspace.copy: '$f' is not a plain relative path: not copied" >&2
            continue
        fi
        [ -f "$main/$f" ] || { echo "workspace.copy: $main/$f is not there: not copied" >&2 && continue; }
        mkdir -p "$wt/$(dirname -- "$f")" && cp -p -- "$main/$f" "$wt/$f" ||
            { echo "workspace.copy: could not copy $f" >&2 && continue; }
        # Never into git: a worker's `git add -A` must not take it.
        if ! git -C "$wt" check-ignore -q --no-index -- "$f" 2>/dev/null; then
            mkdir -p "$gd/info" && printf '/%s\n' "$f" >>"$ex"
        fi
    done
}

ws_run() { # ws_run WHAT SCRIPT WT LOG TIMEOUT: run SCRIPT in WT (bash), output to LOG; its status
    # (The caller has set the worker's environment up: see worker_env.)  Confined, it runs in
    # the kernel sandbox a branch's commands get (sandbox_argv): the repo's file may be a
    # worker's (a review's worktree is its branch).
    sandbox_for_run "${COORD_CONFINE-0}" "${4%/*}" "$3" || {
        echo "coord: worker.confine is on but bubblewrap is missing: $1 not run" >>"$4"
        return 29
    }
    (cd "$3" && { [ -z "$SANDBOX_TMP" ] || export TMPDIR=$SANDBOX_TMP; } &&
        exec timeout --kill-after=10 "$5" "${SANDBOX[@]}" bash -c "$2") </dev/null >>"$4" 2>&1
}

ws_prepare() { # ws_prepare RUN WT: copy files and run setup; set WS_JSON; status 1 if it failed
    local run=$1 wt=$2 setup timeout t0 rc=0 ms late=false tail=""
    local -A WSF=()
    local -a WSF_COPY=() copy=()
    WS_JSON=""
    [ -f "$wt/.coord/workspace.yml" ] && ws_parse "$wt/.coord/workspace.yml"
    setup=${COORD_WS_SETUP:-${WSF[setup]-}}
    timeout=${COORD_WS_TIMEOUT:-${WSF[timeout]:-$WS_TIMEOUT_DEFAULT}}
    valid_num "$timeout" && ((timeout > 0)) || timeout=$WS_TIMEOUT_DEFAULT
    if ((${#COORD_WS_COPY[@]})); then copy=("${COORD_WS_COPY[@]}"); else copy=("${WSF_COPY[@]}"); fi
    if ((${#copy[@]})) && [ -n "${COORD_WS_MAIN-}" ]; then
        ws_copy "$COORD_WS_MAIN" "$wt" "${copy[@]}" 2>>"$run/setup.log"
    fi
    # What `coord clean` runs before it removes the worktree, kept with the run: as the repo
    # had it when the worktree was made (a worker's later edit of the file changes nothing).
    local archive=${COORD_WS_ARCHIVE:-${WSF[archive]-}}
    local app=${COORD_WS_RUN:-${WSF[run]-}}
    [ -n "$app" ] && printf '%s\n' "$app" >"$run/app.sh"
    if [ -n "$archive" ]; then
        printf '%s\n' "$archive" >"$run/archive.sh" && printf '%s\n' "$timeout" >"$run/archive.timeout"
    fi
    [ -n "$setup" ] || return 0
    now_ms
    t0=$NOW
    (worker_env && ws_run setup "$setup" "$wt" "$run/setup.log" "$timeout") || rc=$?
    now_ms
    ms=$((NOW - t0))
    [ "$rc" = 124 ] && late=true
    if [ "$rc" != 0 ]; then
        # The end of its log goes with the run's end: it says what went wrong.
        json_str tail "$(tail -c "$WS_LOG_TAIL" "$run/setup.log" 2>/dev/null)"
    fi
    printf -v WS_JSON '"setup":{"exit":%s,"seconds":%s.%03d,"timed_out":%s%s}' \
        "$rc" "$((ms / 1000))" "$((ms % 1000))" "$late" "${tail:+,\"tail\":$tail}"
    return $((rc != 0))
}
