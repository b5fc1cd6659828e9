#!/usr/bin/env bash
# guix-matrix entry point: start guix-daemon, run the command, report failed
# builds in place, stop the daemon, and exit with the command's own code.
#
#   /entry-point.sh guix build hello
#
# Environment (all optional):
#   GUIX_SUBSTITUTE_URLS   space-separated substitute servers; default: the
#                          list in /etc/guix-matrix/substitute-urls
#   GUIX_DAEMON_ARGS       extra guix-daemon flags; default: baked in at build
#                          time from matrix.toml (e.g. --disable-chroot under
#                          qemu-user)
#   GUIX_DAEMON_TIMEOUT    seconds to wait for the daemon socket (default 60)
#   XDG_CACHE_HOME         when it points outside $HOME/.cache (a tmpfs, for
#                          armhf), Guix's cache is copied there before the
#                          command and back after it
#
# After `guix pull`, guix-matrix-pin-check says whether each pinned commit
# exists, is on its channel's branch and descends from the current generation
# (guix pull is silent about the second); the exit code stays guix pull's.
if [ -z "${BASH_VERSION:-}" ]; then
	exec bash "$0" "$@"
fi
set -exuo pipefail

socket=/var/guix/daemon-socket/socket
daemon_pid=""
marker=""

default_urls() {
	sed -e 's/#.*//' -e '/^[[:space:]]*$/d' /etc/guix-matrix/substitute-urls | tr '\n' ' '
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
			sleep 0.1
		done
		kill -TERM "$daemon_pid"
		wait "$daemon_pid" || true
	fi
	daemon_pid=""
}


# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {

	local rc=$?
	stop_daemon
	[ -z "$marker" ] || rm -f "$marker"
	return "$rc"
}
trap cleanup EXIT

start_daemon() {
	local urls="${GUIX_SUBSTITUTE_URLS-$(default_urls)}"
	# A socket left by an earlier run (or baked in by `docker commit`) is not
	# a live daemon: waiting on it would run the command before the daemon
	# listens (`failed to connect to ...: Connection refused`).
	rm -f "$socket"
	# shellcheck disable=SC2086 # GUIX_DAEMON_ARGS is a list of flags
	guix-daemon --build-users-group=guixbuild \
		--substitute-urls="$urls" ${GUIX_DAEMON_ARGS-} &
	daemon_pid=$!
	local deadline=$((SECONDS + ${GUIX_DAEMON_TIMEOUT:-60}))
	until [ -S "$socket" ]; do
		if ! kill -0 "$daemon_pid" 2>/dev/null; then
			echo "guix-matrix: guix-daemon exited before it answered (see its output above)" >&2
			daemon_pid=""
			exit 125
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "guix-matrix: guix-daemon did not open $socket within ${GUIX_DAEMON_TIMEOUT:-60}s" >&2
			exit 125
		fi
		sleep 0.1
	done
}

# Copy Guix's cache to a tmpfs XDG_CACHE_HOME (and back): 32-bit programs
# under qemu-user cannot readdir() ext4/overlay directories (64-bit offsets).
cache_in() {
	if [ -n "${XDG_CACHE_HOME:-}" ] && [ "$XDG_CACHE_HOME" != "$HOME/.cache" ]; then
		mkdir -p "$XDG_CACHE_HOME/guix" "$HOME/.cache/guix"
		cp -a "$HOME/.cache/guix/." "$XDG_CACHE_HOME/guix/"
	fi
}
cache_out() {
	if [ -n "${XDG_CACHE_HOME:-}" ] && [ "$XDG_CACHE_HOME" != "$HOME/.cache" ]; then
		cp -a "$XDG_CACHE_HOME/guix/." "$HOME/.cache/guix/"
	fi
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

# The derivations whose build failed during this command: their log is newer
# than the marker and at least one of their outputs is not in the store.
failed_logs() {
	local log drv out missing
	find /var/log/guix/drvs -type f -name '*.drv.gz' -newer "$marker" 2>/dev/null | sort |
		while read -r log; do
			drv="/gnu/store/$(basename "$(dirname "$log")")$(basename "$log" .gz)"
			missing=1
			if [ -f "$drv" ]; then
				missing=0
				while read -r out; do
					[ -e "$out" ] || missing=1
				done < <(grep -o '("[^"]*","/gnu/store/[^"]*"' "$drv" | cut -d'"' -f4)

			fi
			[ "$missing" -eq 0 ] || echo "$log"
		done
}

report_failure() {
	local logs log name dir="${PWD%/}"

	logs=$(failed_logs)
	if [ -z "$logs" ]; then
		echo "guix-matrix: the command failed; no derivation build log was written during it"
		return 0
	fi
	for log in $logs; do
		name="$(basename "$(dirname "$log")")$(basename "$log" .drv.gz)"
		cp "$log" "$dir/$name.drv.gz"
		gzip -dc "$dir/$name.drv.gz" >"$dir/$name.drv.log"
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

if [ "$#" -eq 0 ]; then
	set -- sh
fi

marker=$(mktemp /tmp/guix-matrix-marker.XXXXXX)
cache_in
start_daemon

rc=0
"$@" || rc=$?

if [ "$rc" -ne 0 ]; then
	report_failure || echo "guix-matrix: could not collect the build logs" >&2
	daemon_died || true
fi
if is_pull "$@"; then
	GUIX_MATRIX_PULL_STARTED="$marker" guix-matrix-pin-check "${@:3}" ||
		echo "guix-matrix: the pin check found a problem (above); the exit code stays guix pull's ($rc)"
fi
stop_daemon
cache_out || echo "guix-matrix: could not copy the cache back from $XDG_CACHE_HOME" >&2
exit "$rc"
