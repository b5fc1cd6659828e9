#!/usr/bin/env bash
# The image's online step ("run with capabilities, then commit"): pull Guix
# to the commit pinned in /root/.config/guix/channels.scm, keep only that
# generation, install the certificates, collect garbage, and write the pin
# back as `guix describe` reports it.
# Run it through the entry point: /entry-point.sh /usr/local/bin/guix-pull.sh
set -exuo pipefail

readonly channels=/root/.config/guix/channels.scm
# --fallback: a substitute that fails mid-download is built instead.
readonly pull_args=(--channels="$channels" --fallback)
started=""

# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() { [ -z "$started" ] || rm -f "$started"; }

# The same check the entry point runs after a pull, with the pull's options.
pin_check() {
	GUIX_MATRIX_PULL_STARTED="$started" guix-matrix-pin-check "${pull_args[@]}"
}

pull() {
	local rc=0
	guix pull "${pull_args[@]}" || rc=$?
	if [ "$rc" -ne 0 ]; then
		pin_check || true
		exit "$rc"
	fi
	# guix pull checks out a pinned commit of another branch without a word.
	pin_check
}

# The pin must not move: a plain `guix pull` later stays on it.
keep_pin() {
	local pinned="$1"
	guix describe --format=channels >"$channels.new"
	if ! grep -q "$pinned" "$channels.new"; then
		echo "guix-matrix: guix describe does not show the pinned commit $pinned" >&2
		cat "$channels.new" >&2
		rm -f "$channels.new"
		exit 1
	fi
	mv "$channels.new" "$channels"
}

main() {
	trap cleanup EXIT
	local pinned
	pinned=$(grep -o '(commit "[0-9a-f]*")' "$channels" | cut -d'"' -f2)
	started=$(mktemp)
	pull
	# From here on the pulled guix (PATH and the /usr/local/bin wrappers).
	# shellcheck source=/dev/null # scripts/profile.sh, linted on its own
	. /etc/guix-matrix/profile.sh
	hash -r

	# Keep one generation: the pulled one.
	guix pull --delete-generations || true
	guix package --delete-generations || true

	guix install --fallback nss-certs
	guix gc

	keep_pin "$pinned"
	guix describe
	guix --version
}

main "$@"
