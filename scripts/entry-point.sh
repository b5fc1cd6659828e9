#!/usr/bin/env bash
# guix-matrix entry point: start guix-daemon (or reuse the one an enclosing
# entry point started), run the command, report failed builds in place, stop
# the daemon, and exit with the command's own code.
#
#   /entry-point.sh guix build hello
#
# Which Guix runs: the generation `guix pull` made (~/.config/guix/current,
# the pinned Guix) when there is one, else Debian's; guix-daemon likewise.
# The entry point says which (see /etc/guix-matrix/profile.sh).
#
# Environment (all optional):
#   GUIX_SUBSTITUTE_URLS   space-separated substitute servers; default: the
#                          list in /etc/guix-matrix/substitute-urls; empty: none
#   GUIX_DAEMON_ARGS       extra guix-daemon flags (default: none)
#   GUIX_MATRIX_CHROOT     auto (default): builds run isolated in guix-daemon's
#                          chroot, except under an emulator (qemu-user cannot
#                          clone a builder into new namespaces), where the
#                          daemon gets --disable-chroot; yes | no: always | never
#   GUIX_DAEMON_TIMEOUT    seconds to wait for the daemon socket (default 60)
#   XDG_CACHE_HOME         when it is another directory than ~/.cache (a
#                          tmpfs, for armhf), Guix's cache is copied there
#                          before the command and back after it
#
# Exit codes: the command's own, except
#   121  guix-daemon exited before it answered (the command did not run)
#   122  guix-daemon did not answer within GUIX_DAEMON_TIMEOUT (idem)
#   123  a setting has a value it does not take (GUIX_MATRIX_CHROOT not auto,
#        yes or no; GUIX_DAEMON_TIMEOUT not 1-3600; GUIX_MATRIX_DAEMON_PID not
#        a process id; GUIX_MATRIX_CURRENT not a profile of Guix's own;
#        GUIX_DAEMON_ARGS with a --listen that is no socket path): named with
#        its fix, nothing evaluated (idem)
# (125-127 stay docker's and the shell's own.)
#
# After `guix pull`, guix-matrix-pin-check says whether each pinned commit
# exists, is on its channel's branch and descends from the current generation
# (guix pull is silent about the second); the exit code stays guix pull's.
if [ -z "${BASH_VERSION:-}" ]; then
	exec bash "$0" "$@"
fi
set -exuo pipefail

readonly socket=/var/guix/daemon-socket/socket
readonly url_file=/etc/guix-matrix/substitute-urls
readonly exit_daemon_died=121 exit_daemon_silent=122 exit_bad_setting=123
daemon_pid=""      # the daemon this entry point started; empty when reusing one
marker=""          # a file older than every log the command writes
substitute_urls="" # what guix-daemon gets as --substitute-urls
daemon_args=()     # GUIX_DAEMON_ARGS as words (check_settings)
command_pid=""     # the command, while it runs

warn() { echo "guix-matrix: $*" >&2; }

# Waits $1 seconds inside bash: under qemu-user every program started costs
# tens of milliseconds, so the waits below start none (a read that times out).
nap() { read -rt "$1" <> <(:) || :; }

# Which guix and guix-daemon run, and from where.
say_which_guix() {
	local current="${GUIX_MATRIX_CURRENT:-$HOME/.config/guix/current}"
	if [ -x "$current/bin/guix" ]; then
		warn "guix: the pulled generation $(readlink -f "$current") ($(command -v guix), $(command -v guix-daemon))"
	else
		local version=""
		# Written when the image was built; dpkg-query if it is gone.
		{ read -r version </etc/guix-matrix/debian-guix-version && [ -n "$version" ]; } 2>/dev/null ||
			version=$(dpkg-query -W -f '${Version}' guix 2>/dev/null)
		warn "guix: Debian's $version (/usr/bin/guix, /usr/bin/guix-daemon); no pulled generation in $current"
	fi
}

# The substitute servers: GUIX_SUBSTITUTE_URLS, else the image's list. Says
# so whenever that leaves none (substitutes are then off, not silently).
read_substitute_urls() {
	if [ -n "${GUIX_SUBSTITUTE_URLS+set}" ]; then
		substitute_urls=$GUIX_SUBSTITUTE_URLS
		[ -n "${substitute_urls//[[:space:]]/}" ] ||
			warn "GUIX_SUBSTITUTE_URLS is empty: substitutes are off for this command (everything is built from source)"
	elif [ ! -r "$url_file" ]; then
		warn "$url_file is missing: substitutes are off (everything is built from source)"
		warn "  fix: set GUIX_SUBSTITUTE_URLS, or rebuild the image (substitutes/urls)"
	else
		# One line each, comments and blank lines left out (no sed: see nap).
		local line
		substitute_urls=""
		while IFS= read -r line || [ -n "$line" ]; do
			line=${line%%#*}
			[ -n "${line//[[:space:]]/}" ] && substitute_urls+="$line "
		done <"$url_file"
		if [ -z "${substitute_urls//[[:space:]]/}" ]; then
			warn "$url_file lists no server: substitutes are off (everything is built from source)"
			warn "  fix: set GUIX_SUBSTITUTE_URLS, or list servers in substitutes/urls and rebuild the image"
		fi
	fi
}

# True while guix-daemon has a worker (one per client connection) alive.
# Quiet: it reads every /proc/N/stat.
daemon_has_workers() {
	{ set +x; } 2>/dev/null
	local stat ppid found=1
	for stat in /proc/[0-9]*/stat; do
		read -r _ _ _ ppid _ <"$stat" 2>/dev/null || continue
		if [ "$ppid" = "$daemon_pid" ]; then
			found=0
			break
		fi
	done
	set -x
	return "$found"
}

# Stop the daemon once its workers are done, so none is left orphaned.
stop_daemon() {
	if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
		local deadline=$((SECONDS + 10))
		while daemon_has_workers && [ "$SECONDS" -lt "$deadline" ]; do
			nap 0.05
		done
		kill -TERM "$daemon_pid"
		wait "$daemon_pid" || true
	fi
	daemon_pid=""
}

# shellcheck disable=SC2317 # called through the TERM and INT traps
forward() {
	warn "SIG$1: passing it on to the command (pid $command_pid)"
	kill -"$1" "$command_pid" 2>/dev/null || true
}

# Waits for the command; a trapped signal interrupts `wait`, so wait again
# until the command itself has ended, and return its exit code. A `wait` cut
# short by the trap returns 128+n even when the command ended meanwhile (bash
# reaped it): then its own status, which bash still holds, is asked for once
# more (127: none held, the first answer was the command's own).
wait_command() {
	local rc again
	while :; do
		rc=0
		wait "$command_pid" || rc=$?
		kill -0 "$command_pid" 2>/dev/null && continue
		if [ "$rc" -gt 128 ]; then
			again=0
			wait "$command_pid" 2>/dev/null || again=$?
			[ "$again" -eq 127 ] || rc=$again
		fi
		return "$rc"
	done
}

# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
	local rc=$?
	stop_daemon
	[ -z "$marker" ] || rm -f "$marker"
	return "$rc"
}

# An entry point called from inside another one (`sh -c '/entry-point.sh …'`)
# uses the outer daemon and leaves it alone.
enclosing_daemon() {
	[ -n "${GUIX_MATRIX_DAEMON_PID:-}" ] && kill -0 "$GUIX_MATRIX_DAEMON_PID" 2>/dev/null &&
		[ -S "$socket" ]
}

# The emulator this shell runs under (qemu-user, Rosetta …), nothing when
# native: the kernel's name for our executable. qemu-user hides it from us
# (/proc/self/exe), not from another process (this readlink).
emulator() {
	local exe
	exe=$(readlink "/proc/$$/exe" 2>/dev/null) || return 0
	exe=${exe% (deleted)}
	case "${exe##*/}" in
	bash | sh | dash) ;;
	*) echo "$exe" ;;
	esac
}

# --disable-chroot when the builds cannot be isolated here (GUIX_MATRIX_CHROOT).
chroot_flag() {
	local emu
	case "${GUIX_MATRIX_CHROOT:-auto}" in
	yes) ;;
	no) echo --disable-chroot ;;
	auto)
		[[ " ${GUIX_DAEMON_ARGS-} " != *" --disable-chroot "* ]] || return 0
		emu=$(emulator)
		if [ -n "$emu" ]; then
			warn "running under an emulator ($emu): guix-daemon --disable-chroot (qemu-user cannot clone a builder into new namespaces; GUIX_MATRIX_CHROOT=yes to try anyway)"
			echo --disable-chroot
		fi
		;;
	esac
}

start_daemon() {
	read_substitute_urls
	local chroot
	chroot=$(chroot_flag) || exit "$?"
	# A socket left by an earlier run (or baked in by `docker commit`) is not
	# a live daemon: waiting on it would run the command before the daemon
	# listens (`failed to connect to ...: Connection refused`).
	rm -f "$socket"
	# shellcheck disable=SC2086 # $chroot: one flag or none
	guix-daemon --build-users-group=guixbuild \
		--substitute-urls="$substitute_urls" "${daemon_args[@]}" $chroot &
	daemon_pid=$!
	local timeout=${GUIX_DAEMON_TIMEOUT:-60} # a number: check_settings
	local deadline=$((SECONDS + timeout))
	until [ -S "$socket" ]; do
		if ! kill -0 "$daemon_pid" 2>/dev/null; then
			warn "guix-daemon exited before it answered (see its output above); the command did not run"
			daemon_pid=""
			exit "$exit_daemon_died"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			warn "guix-daemon did not open $socket within ${GUIX_DAEMON_TIMEOUT:-60}s; the command did not run"
			exit "$exit_daemon_silent"
		fi
		nap 0.02
	done
	export GUIX_MATRIX_DAEMON_PID="$daemon_pid"
}

# Guix's cache goes to $XDG_CACHE_HOME when that is another directory than
# ~/.cache (a tmpfs: 32-bit programs under qemu-user cannot readdir() ext4 or
# overlay directories, whose offsets are 64-bit). Paths are compared as
# files, so /root/.cache/ is ~/.cache.
cache_elsewhere() {
	[ -n "${XDG_CACHE_HOME:-}" ] || return 1
	if ! mkdir -p "$XDG_CACHE_HOME/guix" "$HOME/.cache/guix"; then
		warn "cannot create $XDG_CACHE_HOME/guix (above): Guix's cache is not moved"
		return 1
	fi
	! [ "$XDG_CACHE_HOME/guix" -ef "$HOME/.cache/guix" ]
}
cache_in() {
	cache_elsewhere || return 0
	cp -a "$HOME/.cache/guix/." "$XDG_CACHE_HOME/guix/" ||
		warn "could not copy Guix's cache to $XDG_CACHE_HOME/guix (above); the command runs with what was copied"
}
cache_out() {
	cache_elsewhere || return 0
	cp -a "$XDG_CACHE_HOME/guix/." "$HOME/.cache/guix/" ||
		warn "could not copy Guix's cache back from $XDG_CACHE_HOME/guix (above); the exit code stays the command's"
}

# Says so when the daemon died while the command ran: guix then only says
# `failed to connect to .../daemon-socket/socket`.
daemon_died() {
	[ -n "$daemon_pid" ] && ! kill -0 "$daemon_pid" 2>/dev/null || return 1
	local status=0 how
	wait "$daemon_pid" || status=$?
	daemon_pid=""
	if [ "$status" -gt 128 ]; then
		how="killed by signal $((status - 128))"
	else
		how="exit status $status"
	fi
	echo "guix-matrix: guix-daemon died while the command ran ($how); guix commands after that fail with 'failed to connect to $socket'"
	echo "  fix: its own output above says why; killed by signal 9 is most often the kernel's out-of-memory killer (give the container more memory)"
}

# True for a command that rebuilds outputs that already exist (`guix build
# --check`, `--repair`, `--rounds=N`): its failures leave every output in place.
rebuilds() {
	local arg
	for arg in "$@"; do
		case "$arg" in
		--check | --repair | --rounds | --rounds=*) return 0 ;;
		esac
	done
	return 1
}

# The build logs of derivations that failed during this command: written
# after the marker, and with an output missing from the store (or, for a
# rebuild, any written during it: the outputs are there either way).
failed_logs() {
	local all=0 log drv out missing
	! rebuilds "$@" || all=1
	find /var/log/guix/drvs -type f -name '*.drv.gz' -newer "$marker" 2>/dev/null | sort |
		while read -r log; do
			drv="/gnu/store/$(basename "$(dirname "$log")")$(basename "$log" .gz)"
			missing=$all
			if [ "$all" -eq 0 ] && [ -f "$drv" ]; then
				while read -r out; do
					[ -e "$out" ] || missing=1
				done < <(grep -o '("[^"]*","/gnu/store/[^"]*"' "$drv" | cut -d'"' -f4)
			elif [ ! -f "$drv" ]; then
				missing=1
			fi
			[ "$missing" -eq 0 ] || echo "$log"
		done
}

# Copies the failed derivations' logs into the working directory, unpacks
# and prints them between markers.
# put_file DEST COMMAND...: COMMAND's output as a new file DEST. What DEST
# was (a symlink planted in the working directory) is replaced, never
# written through.
put_file() {
	local dest=$1 tmp
	shift
	tmp=$(mktemp "$dest.XXXXXX")
	"$@" >"$tmp"
	chmod 644 "$tmp"
	mv -fT "$tmp" "$dest"
}

report_failure() {
	local logs log name dir="${PWD%/}"
	logs=$(failed_logs "$@")
	if [ -z "$logs" ]; then
		echo "guix-matrix: the command failed; no derivation build log was written during it"
		return 0
	fi
	for log in $logs; do
		name="$(basename "$(dirname "$log")")$(basename "$log" .drv.gz)"
		put_file "$dir/$name.drv.gz" cat "$log"
		put_file "$dir/$name.drv.log" gzip -dc "$log"
		echo "guix-matrix: ==> build log of /gnu/store/$name.drv (copied to $dir/$name.drv.gz, unpacked to $dir/$name.drv.log)"
		cat "$dir/$name.drv.log"
		echo "guix-matrix: <== end of build log of /gnu/store/$name.drv"
	done
}

# True for a `guix pull` that fetches channels (not -l, --roll-back, …).
is_pull() {
	[ "$#" -ge 2 ] && [ "$(basename "$1")" = guix ] && [ "$2" = pull ] || return 1
	local arg
	for arg in "${@:3}"; do
		case "$arg" in
		-l* | --list-generations* | --roll-back | -S* | --switch-generation* | \
			-d* | --delete-generations* | -h | --help | -V | --version | --news | -N | \
			--details | --dry-run | -n) return 1 ;;
		esac
	done
}

# Every setting the environment gives is checked before it is used: a value
# is never evaluated (no arithmetic on it, no globbing), a bad one stops here.
check_settings() {
	bad() {
		warn "$1=$(printf %q "$2"): $3; the command did not run"
		warn "  fix: $4"
		exit "$exit_bad_setting"
	}
	case "${GUIX_MATRIX_CHROOT:-auto}" in
	auto | yes | no) ;;
	*) bad GUIX_MATRIX_CHROOT "$GUIX_MATRIX_CHROOT" "not auto, yes or no" "unset it (auto), or set it to yes or no" ;;
	esac
	if ! [[ "${GUIX_DAEMON_TIMEOUT:-60}" =~ ^[1-9][0-9]{0,3}$ ]] || [ "${GUIX_DAEMON_TIMEOUT:-60}" -gt 3600 ]; then
		bad GUIX_DAEMON_TIMEOUT "$GUIX_DAEMON_TIMEOUT" "not a number of seconds from 1 to 3600" "unset it (60), or give seconds, e.g. 120"
	fi
	if ! [[ "${GUIX_MATRIX_DAEMON_PID:-1}" =~ ^[1-9][0-9]{0,9}$ ]]; then
		bad GUIX_MATRIX_DAEMON_PID "$GUIX_MATRIX_DAEMON_PID" "not a process id" "unset it: the entry point sets it for the commands it runs"
	fi
	# Which guix runs: only a profile of Guix's own (what `guix pull` makes).
	local current=${GUIX_MATRIX_CURRENT-}
	if [ -n "${GUIX_MATRIX_CURRENT+set}" ] && ! [[ "$current" == "${HOME:-/root}/.config/guix/current" ||
		"$current" =~ ^/var/guix/profiles/per-user/[a-z_][a-z0-9_-]*/current-guix$ ]]; then
		bad GUIX_MATRIX_CURRENT "$current" "not a profile of Guix's own (its bin/guix would run as guix)" \
			"unset it (~/.config/guix/current), or name /var/guix/profiles/per-user/USER/current-guix"
	fi
	# guix-daemon's extra flags, split on blanks into words, never globbed;
	# none may open the daemon to the network (a --listen that is no socket path).
	read -r -a daemon_args <<<"${GUIX_DAEMON_ARGS-}"
	local i value
	for ((i = 0; i < ${#daemon_args[@]}; i++)); do
		case "${daemon_args[i]}" in
		--listen=*) value=${daemon_args[i]#--listen=} ;;
		--listen) value=${daemon_args[i + 1]-} ;;
		*) continue ;;
		esac
		[[ "$value" == /* ]] ||
			bad GUIX_DAEMON_ARGS "$GUIX_DAEMON_ARGS" "--listen ${value:-(nothing)} opens the daemon to the network" \
				"listen on a socket path only (--listen=/var/guix/daemon-socket/other), or leave --listen out"
	done
}

# The marker: a new empty file, made without starting a program (see nap).
make_marker() {

	for _ in 1 2 3 4 5 6 7 8; do
		marker=/tmp/guix-matrix-marker.$$.$RANDOM
		if { set -C && : >"$marker"; } 2>/dev/null; then
			set +C
			return 0
		fi
		set +C
	done
	marker=$(mktemp /tmp/guix-matrix-marker.XXXXXX)
}

main() {
	[ "$#" -gt 0 ] || set -- sh
	check_settings
	trap cleanup EXIT
	make_marker
	# shellcheck source=/dev/null # scripts/profile.sh, linted on its own
	. /etc/guix-matrix/profile.sh
	say_which_guix

	local owner=1
	if enclosing_daemon; then
		owner=0
		warn "using the guix-daemon (pid $GUIX_MATRIX_DAEMON_PID) of the enclosing entry point"
	else
		cache_in
		start_daemon
	fi

	# The command runs as our child, its stdin ours: a signal to us (`docker
	# stop` sends SIGTERM to PID 1, which has no default action) is passed
	# on to it, and its exit code is kept.
	local rc=0
	"$@" <&0 &
	command_pid=$!
	trap 'forward TERM' TERM
	trap 'forward INT' INT
	wait_command || rc=$?
	trap - TERM INT

	if [ "$rc" -ne 0 ]; then
		report_failure "$@" || warn "could not collect the build logs (above)"
		daemon_died || true
	fi
	if is_pull "$@"; then
		GUIX_MATRIX_PULL_STARTED="$marker" guix-matrix-pin-check "${@:3}" ||
			echo "guix-matrix: the pin check found a problem (above); the exit code stays guix pull's ($rc)"
	fi
	if [ "$owner" -eq 1 ]; then
		stop_daemon
		cache_out
	fi
	exit "$rc"
}

main "$@"
