# coord-run's confinement part of the launcher (common.sh + workspace.sh + confine.sh +
# launcher.sh): the settings that hold a worker inside Claude Code's own sandbox.
#
# With COORD_CONFINE=1 (worker.confine, on by default) the launcher writes runs/ID/settings.json
# and starts the worker with `--settings` on it:
#   - the Bash sandbox on (bubblewrap, and socat for its proxy), failing when it cannot run,
#     with no unsandboxed fallback, Bash allowed inside it;
#   - filesystem.denyRead: the worker user's secrets (SECRETS below), coordlib's own files
#     outside the run, and worker.deny_read; the same paths denied to the Read tool;
#   - filesystem.denyWrite: the worker's home, but for the way to its worktree, the repo's git
#     dir (and there, its hooks and config are denied again) and its temp dir; when none of
#     those is under the home, all of it;
#   - network.allowedDomains, when worker.allowed_domains names some.
# The worker's file tools are held to the worktree by the coordinator (Edit(./**),
# Write(./**)), and CLAUDE_CODE_SUBPROCESS_ENV_SCRUB=1 keeps the API key out of Bash.

# SECRETS (what no worker reads, relative to its home) is in shared.sh's sandbox section.

# What the sandbox (CLI 2.1.197) makes in the working directory.  It protects these names from
# Bash writes: one it finds absent becomes, while a command runs, a mount point (an empty file,
# or /dev/null, which git cannot add); with CLAUDE_CODE_SUBPROCESS_ENV_SCRUB=1 it also makes the
# package manifests, lock files, .env files, scripts/ and .github/ read-only, creating empty ones
# where there were none, and leaves them behind.  The names the worktree lacks when the worker
# starts go in the repo's info/exclude, so a worker's `git add -A` never takes them; a name
# ending in / is a directory's, and a real directory of that name stays visible (`!/name/`).
# When the worker ends, what is left of them, empty, is removed, and a real file a worker made
# under one of these names is reported as uncommitted rather than silently ignored.
SANDBOX_MOUNTS=(.gitconfig .gitmodules .bashrc .bash_profile .zshrc .zprofile .profile
    .ripgreprc .mcp.json .vscode/ .idea/ .github/ scripts/ .claude/commands/ .claude/agents/
    .env .env.local .env.development .env.development.local .env.production
    .env.production.local .env.test .env.test.local .npmrc .yarnrc .yarnrc.yml bunfig.toml
    package.json package-lock.json pnpm-lock.yaml yarn.lock node_modules/.bin/)

# The sandbox of CLI 2.1.197 races with itself: for a protected name it finds absent (a
# dotfile of the home, the repo's config.lock, ...) it mounts /dev/null there, creating the
# file, and removes it after the command; another session that looked meanwhile asks bubblewrap
# to bind that file onto itself and fails ("bwrap: Can't find source path").  The shim, first on
# the worker's PATH, makes such a vanished file again, empty, before bubblewrap binds it (what
# the CLI does for an absent one), removes it afterwards as the CLI would, and runs bubblewrap
# again when it still could not set the sandbox up.
CONFINE_SHIM='#!/bin/bash
# coord: bubblewrap for Claude Code'"'"'s sandbox; see coordlib/runtime/confine.sh
orig=("$@") made=() n=$# try=0 rc=0 first="" err="" p=""
again="^bwrap: Can.t (get type of source|find source path|create file at|mkdir) "
err=$(mktemp 2>/dev/null) || exec REAL "$@"
while :; do
    args=("${orig[@]}") made=() i=0
    while ((i < n - 2)); do
        case ${args[i]} in
            --ro-bind | --bind)
                p=${args[i + 1]}
                if [ "$p" = "${args[i + 2]}" ] && [ ! -e "$p" ] && [ ! -L "$p" ]; then
                    # As the CLI does for an absent name: an empty file made here first
                    # (its directory may be read-only inside), else /dev/null bound there.
                    if (set -o noclobber; : >"$p") 2>/dev/null; then
                        made+=("$p")
                    else
                        args[i + 1]=/dev/null
                    fi
                fi
                i=$((i + 3)) ;;
            *) i=$((i + 1)) ;;
        esac
    done
    { REAL "${args[@]}" 2>&1 1>&57 57>&- | tee "$err" >&2; } 57>&1
    rc=${PIPESTATUS[0]}
    for p in "${made[@]}"; do [ -f "$p" ] && [ ! -L "$p" ] && [ ! -s "$p" ] && rm -f -- "$p"; done
    first=""
    read -r first <"$err" 2>/dev/null
    try=$((try + 1))
    # bubblewrap could not set the sandbox up because a file vanished meanwhile: again.
    if ((rc == 1 && try < 10)) && [[ $first =~ $again ]]; then
        sleep 0.0$((RANDOM % 9 + 1))
        continue
    fi
    rm -f -- "$err"
    exit "$rc"
done
'

confine_shim() { # confine_shim WORKDIR: set CONFINE_SHIM_DIR to where the bwrap shim is (made once)
    local dir="$1/bin/sandbox" real text q
    CONFINE_SHIM_DIR=""
    real=$(command -v bwrap) || return 0
    sq q "$real"
    text=${CONFINE_SHIM//REAL/$q}
    if [ ! -x "$dir/bwrap" ] || [ "$(<"$dir/bwrap")" != "${text%$'\n'}" ]; then
        mkdir -p "$dir" && printf '%s' "$text" >"$dir/bwrap.$$" && chmod 755 "$dir/bwrap.$$" &&
            mv -f "$dir/bwrap.$$" "$dir/bwrap" || return 0
    fi
    CONFINE_SHIM_DIR=$dir
}

deny_write_under() { # deny_write_under DIR KEEP...: add to DW each entry of DIR holding no KEEP
    local dir=$1 e k hold
    shift
    for e in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
        [ -e "$e" ] || [ -L "$e" ] || continue
        hold=""
        for k in "$@"; do
            [ "$k" = "$e" ] && hold=self && break
            case $k in "$e"/*) hold=inside ;; esac
        done
        case $hold in
            self) ;;
            inside) deny_write_under "$e" "$@" ;;
            *) DW+=("$e") ;;
        esac
    done
}

json_list() { # json_list VAR ITEM...: set VAR to the items as a JSON array of strings
    local q out="" item
    for item in "${@:2}"; do
        json_str q "$item"
        out+=${out:+,}$q
    done
    printf -v "$1" '[%s]' "$out"
}

confine_prepare() { # confine_prepare RUN WT: write RUN/settings.json, exclude the mount points
    local run=$1 wt=$2 home=$HOME tmp=${TMPDIR:-/tmp} kv gcd p n ex have="" workdir
    local -a DW=() deny=() keep=() reads=()
    workdir=${run%/runs/*}
    confine_shim "$workdir"
    for kv in "${wenv[@]}"; do # the worker's own home and temp dir, if its env sets them
        case $kv in HOME=?*) home=${kv#HOME=} ;; TMPDIR=?*) tmp=${kv#TMPDIR=} ;; esac
    done
    home=${home%/}
    for p in "${SECRETS[@]}"; do deny+=("$home/$p"); done
    for p in "${COORD_DENY_READ[@]}"; do
        case $p in "~") p=$home ;; "~/"*) p=$home/${p:2} ;; /*) ;; *) continue ;; esac
        deny+=("$p")
    done
    # coordlib's own: every other run (briefings, events) and its machinery; a scratch run
    # works in its own run dir, which stays readable.
    for p in "$workdir/bin" "$workdir/locks" "$workdir/ports" "$workdir/runs"; do
        case $wt/ in "$p"/*) continue ;; esac
        deny+=("$p")
    done
    gcd=$(git -C "$wt" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)
    # The sandbox makes an absent config.worktree (the repo's, the worktree's) a mount point
    # while a command runs, and removes it after: a worker starting a command meanwhile on the
    # same repo then fails ("bwrap: Can't get type of source").  An empty one, made once
    # here, is read by git only under extensions.worktreeConfig, and then says nothing.
    for p in "$gcd" "$(git -C "$wt" rev-parse --path-format=absolute --git-dir 2>/dev/null)"; do
        [ -n "$p" ] && [ -d "$p" ] && { [ -e "$p/config.worktree" ] || : >>"$p/config.worktree"; }
    done
    keep=("$wt" "$tmp")
    [ -n "$gcd" ] && keep+=("$gcd")
    local under=0
    for p in "${keep[@]}"; do case $p/ in "$home"/*) under=1 ;; esac; done
    if ((under)); then deny_write_under "$home" "${keep[@]}"; else DW=("$home"); fi
    [ -n "$gcd" ] && DW+=("$gcd/hooks" "$gcd/config")
    for p in "${deny[@]}"; do reads+=("Read(/$p)" "Read(/$p/**)"); done
    local jr jw jp jd net=""
    json_list jr "${deny[@]}"
    json_list jw "${DW[@]}"
    json_list jp "${reads[@]}"
    if ((${#COORD_DOMAINS[@]})); then
        json_list jd "${COORD_DOMAINS[@]}"
        net=",\"network\":{\"allowedDomains\":$jd}"
    fi
    printf '{"sandbox":{"enabled":true,"failIfUnavailable":true,"autoAllowBashIfSandboxed":true,"allowUnsandboxedCommands":false,"filesystem":{"denyRead":%s,"denyWrite":%s}%s},"permissions":{"deny":%s}}\n' \
        "$jr" "$jw" "$net" "$jp" >"$run/settings.json" || return 1
    # The sandbox's mount points and leftovers, never committed (only those the worktree does
    # not have: CONFINE_ABSENT, which confine_tidy and confine_hidden look at when it ends).
    CONFINE_ABSENT=()
    for n in "${SANDBOX_MOUNTS[@]}"; do
        [ -e "$wt/${n%/}" ] || [ -L "$wt/${n%/}" ] || CONFINE_ABSENT+=("$n")
    done
    if [ -n "$gcd" ]; then
        ex="$gcd/info/exclude"
        [ -f "$ex" ] && have=$(<"$ex")
        for n in "${CONFINE_ABSENT[@]}"; do
            p="/${n%/}"
            [[ $n == */ ]] && p+=$'\n'"!/$n"
            [[ $'\n'$have$'\n' == *$'\n'$p$'\n'* ]] && continue
            mkdir -p "$gcd/info" && printf '%s\n' "$p" >>"$ex" && have+=$'\n'$p
        done
    fi
}

confine_tidy() { # confine_tidy WT: remove what the sandbox left, empty, where nothing was
    local wt=$1 n p
    for n in "${CONFINE_ABSENT[@]}"; do
        p="$wt/${n%/}"
        if [ -f "$p" ] && [ ! -L "$p" ] && [ ! -s "$p" ]; then
            rm -f -- "$p"
        elif [ -d "$p" ] && [ ! -L "$p" ]; then
            # Only what is empty through and through: a worker's real files there stay.
            find "$p" -depth \( -type f -empty -o -type d -empty \) -delete 2>/dev/null
        fi
    done
    for p in "$wt/node_modules" "$wt/.claude"; do
        [ -d "$p" ] && [ ! -L "$p" ] && rmdir -- "$p" 2>/dev/null
    done
    return 0
}

confine_hidden() { # confine_hidden WT: set CONFINE_HIDDEN to the files a worker made under one
    # of the excluded names (after confine_tidy: they are not empty): info/exclude hides them
    # from `git status`, so the outcome counts them as uncommitted here.
    local wt=$1 n line
    local -a here=()
    CONFINE_HIDDEN=()
    for n in "${CONFINE_ABSENT[@]}"; do
        [[ $n == */ ]] && continue
        [ -f "$wt/$n" ] && [ ! -L "$wt/$n" ] && here+=("$n")
    done
    ((${#here[@]})) || return 0
    while IFS= read -r line; do
        [ "${line:0:3}" = "!! " ] && CONFINE_HIDDEN+=("${line:3}")
    done < <(git -c core.quotePath=true -c core.fsmonitor=false -C "$wt" status \
        --porcelain=v1 --ignored=matching --untracked-files=all -- "${here[@]}" 2>/dev/null)
    return 0
}
