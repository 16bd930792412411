#!/bin/sh
# Install deepdream-live's systemd user units for this user (make install-service).
#
#   systemd/install.sh [options] [EXECUTABLE]
#
# EXECUTABLE is the deepdream-live command the units run (default: `command -v deepdream-live`);
# its absolute path replaces %h/.local/bin/deepdream-live in the units' ExecStart lines.
#
#   --hours HH:MM-HH:MM  also install the opening-hours timers (start and stop the show daily at
#                        these times); the show is then started by them, not at every login
#   --v4l2loopback       also copy the v4l2loopback modules-load.d and modprobe.d files to /etc
#                        (uses sudo when not root)
#   --no-enable          copy the files and reload, but enable nothing
#   --dry-run            print what would be done, do nothing
#
# Idempotent: files whose content is already right are left alone, and it says so.
set -eu

here=$(cd "$(dirname "$0")" && pwd -P)
dry_run=0
hours=
v4l2=0
enable=1
exe=

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,17s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=1 ;;
        --hours) [ $# -ge 2 ] || die "--hours needs HH:MM-HH:MM"; hours=$2; shift ;;
        --hours=*) hours=${1#--hours=} ;;
        --v4l2loopback) v4l2=1 ;;
        --no-enable) enable=0 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$exe" ] || die "one EXECUTABLE only, got '$exe' and '$1'"; exe=$1 ;;
    esac
    shift
done

# --- the command the units run -----------------------------------------------------------
if [ -z "$exe" ]; then
    exe=$(command -v deepdream-live || true)
    [ -n "$exe" ] || die "deepdream-live is not on PATH; pass its path, e.g. systemd/install.sh \$PWD/.venv/bin/deepdream-live"
fi
case $exe in
    /*) ;;
    *) exe="$(cd "$(dirname "$exe")" && pwd -P)/$(basename "$exe")" ;;
esac
[ -x "$exe" ] || die "$exe is not an executable file"
case $exe in
    *[[:space:]\"\'\\]*) die "the path $exe contains spaces or quotes; install deepdream-live somewhere without them" ;;
esac
# systemd expands % specifiers and $ variables in ExecStart: escape them; then escape for sed.
unit_exe=$(printf '%s' "$exe" | sed -e 's/%/%%/g' -e 's/\$/$$/g')
sed_exe=$(printf '%s' "$unit_exe" | sed -e 's/[&|]/\\&/g')

# --- opening hours -------------------------------------------------------------------------
open_hm= close_hm=
if [ -n "$hours" ]; then
    case $hours in
        [0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]) ;;
        *) die "--hours $hours: expected HH:MM-HH:MM, e.g. 10:00-18:00" ;;
    esac
    open_hm=${hours%-*}
    close_hm=${hours#*-}
    open_n=$(printf '%s' "$open_hm" | tr -d :)
    close_n=$(printf '%s' "$close_hm" | tr -d :)
    # Leading zeros: strip them so the shell does not read 0930 as anything but 930.
    [ "${open_n#0}" -lt 2400 ] && [ "${close_n#0}" -lt 2400 ] || die "--hours $hours: times must be before 24:00"
    [ "${open_n#0}" -lt "${close_n#0}" ] || die "--hours $hours: opening must come before closing on the same day"
fi

dest=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user
config=${XDG_CONFIG_HOME:-$HOME/.config}/deepdream-live/site.toml
prefix=
[ "$dry_run" = 1 ] && prefix="would "

run() {
    # Print the command, then run it unless this is a dry run.
    say "${prefix}run: $*"
    [ "$dry_run" = 1 ] || "$@"
}

# install_file SOURCE TARGET [SED_SCRIPT]: write SOURCE (filtered) to TARGET if it differs.
install_file() {
    src=$1 target=$2 script=${3:-}
    tmp=$(mktemp)
    if [ -n "$script" ]; then sed -e "$script" "$src" >"$tmp"; else cat "$src" >"$tmp"; fi
    if [ -f "$target" ] && cmp -s "$tmp" "$target"; then
        say "unchanged: $target"
        rm -f "$tmp"
        return 0
    fi
    say "${prefix}install: $src -> $target"
    if [ "$dry_run" = 1 ]; then rm -f "$tmp"; return 0; fi
    mkdir -p "$(dirname "$target")"
    chmod 644 "$tmp"
    mv "$tmp" "$target"
}

say "deepdream-live executable: $exe"
units="deepdream-live.service deepdream-live-engines.service deepdream-live-session.target"
timer_units="deepdream-live-open.timer deepdream-live-close.timer deepdream-live-open.service deepdream-live-close.service"
exec_script="s|%h/\.local/bin/deepdream-live|$sed_exe|g"

for unit in $units; do
    install_file "$here/$unit" "$dest/$unit" "$exec_script"
done

if [ -n "$hours" ]; then
    hours_script="s|^OnCalendar=\(.*\) 10:00\$|OnCalendar=\1 $open_hm|;s|^OnCalendar=\(.*\) 18:00\$|OnCalendar=\1 $close_hm|"
    hours_script="$hours_script;s|-ge 1000 |-ge ${open_n#0} |;s|-lt 1800 |-lt ${close_n#0} |"
    for unit in $timer_units; do
        install_file "$here/$unit" "$dest/$unit" "$hours_script"
    done
fi

# --- /etc files for the virtual camera -----------------------------------------------------
if [ "$v4l2" = 1 ]; then
    sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    for kind in modules-load.d modprobe.d; do
        target=/etc/$kind/v4l2loopback.conf
        if [ -f "$target" ] && cmp -s "$here/$kind/v4l2loopback.conf" "$target"; then
            say "unchanged: $target"
        else
            [ -z "$sudo" ] || say "using sudo to write $target"
            run $sudo install -D -m 644 "$here/$kind/v4l2loopback.conf" "$target"
        fi
    done
    say "the loopback device appears at the next boot, or now with: sudo modprobe v4l2loopback (needs v4l2loopback-dkms)"
else
    say "skipped: /etc/modules-load.d and /etc/modprobe.d (pass --v4l2loopback to install them for the virtual camera)"
fi

[ -f "$config" ] || say "note: $config does not exist yet; the show reads it at start (see the README's site configuration)"

# --- tell systemd --------------------------------------------------------------------------
if ! command -v systemctl >/dev/null 2>&1; then
    say "systemctl not found: files installed, nothing reloaded or enabled"
    exit 0
fi
# systemctl --user finds this user's manager through XDG_RUNTIME_DIR, which a login sets and
# `sudo -iu USER` does not; the directory exists while the manager runs (at boot with linger).
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    runtime=/run/user/$(id -u)
    if [ -d "$runtime" ]; then
        say "XDG_RUNTIME_DIR is not set (sudo -iu does not set it): using $runtime"
        export XDG_RUNTIME_DIR=$runtime
    elif [ "$dry_run" = 0 ]; then
        die "no systemd user manager for $(id -un) ($runtime is missing): run \`sudo loginctl enable-linger $(id -un)\`, then open the shell with \`sudo machinectl shell $(id -un)@\` (or log in graphically) and run this again (systemd/README.md, step 5)"
    fi
fi
run systemctl --user daemon-reload || die "systemctl --user cannot reach $(id -un)'s user manager: in a shell from \`sudo -iu $(id -un)\`, \`export XDG_RUNTIME_DIR=/run/user/$(id -u)\` first, or use \`sudo machinectl shell $(id -un)@\`; the manager runs after \`sudo loginctl enable-linger $(id -un)\` (systemd/README.md, step 5)"
if [ "$enable" = 0 ]; then
    say "not enabled (--no-enable); start by hand with: systemctl --user start deepdream-live"
    exit 0
fi
if [ -n "$hours" ]; then
    # The open service decides at login whether it is opening time; the show is not started
    # unconditionally at every login any more.
    run systemctl --user disable deepdream-live.service
    run systemctl --user enable deepdream-live-open.service deepdream-live-open.timer deepdream-live-close.timer
    run systemctl --user start deepdream-live-open.timer deepdream-live-close.timer deepdream-live-open.service
    say "open $open_hm-$close_hm daily; the show starts at the next opening time or login within the hours"
else
    removed=0
    for unit in $timer_units; do
        if [ -f "$dest/$unit" ]; then
            # Installed earlier with --hours: without it, the show runs whenever the session does.
            run systemctl --user disable --now "$unit"
            [ "$dry_run" = 1 ] || rm -f "$dest/$unit"
            say "${prefix}remove: $dest/$unit (no --hours)"
            removed=1
        fi
    done
    [ "$removed" = 0 ] || run systemctl --user daemon-reload
    run systemctl --user enable deepdream-live.service
    say "enabled: the show starts with the graphical session (now: systemctl --user start deepdream-live)"
fi
say "logs: journalctl --user -u deepdream-live -f"
