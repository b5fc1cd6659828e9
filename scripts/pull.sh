#!/usr/bin/env bash
# The image's online step ("run with capabilities, then commit"): pull Guix
# to the commit pinned in /root/.config/guix/channels.scm, keep only that
# generation, install the certificates, collect garbage, and write the pin
# back as `guix describe` reports it.
# Run it through the entry point: /entry-point.sh /usr/local/bin/guix-pull.sh
# [--epoch SECONDS]: the store database's registration times set to that
# time (the harness passes its base's date: the same pull, the same bits).
set -exuo pipefail

readonly channels=/root/.config/guix/channels.scm
# What the harness's pull stage trusts (matrix.toml's pull_substitutes and
# pull_keys): "urls URL..." and "keys NAME.pub..." lines. Only for this pull;
# the image keeps its own servers and every key of substitutes/ for users.
readonly trust_file=/etc/guix-matrix/pull-trust
readonly acl=/etc/guix/acl
# --fallback: a substitute that fails mid-download is built instead.
pull_args=(--channels="$channels" --fallback)
install_args=(--fallback)
started=""
epoch=""

# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
	[ -z "$started" ] || rm -f "$started"
	if [ -e "$acl.image" ]; then
		mv -f "$acl.image" "$acl"
	fi
	rm -f "$trust_file"
}

# The pull trusts only the servers and keys of $trust_file, when there is one.
trust_only() {
	[ -e "$trust_file" ] || return 0
	local word urls="" keys="" key
	while read -r word rest; do
		case "$word" in
		urls) urls=$rest ;;
		keys) keys=$rest ;;
		esac
	done <"$trust_file"
	if [ -z "$urls" ] || [ -z "$keys" ]; then
		echo "guix-matrix: $trust_file needs a urls and a keys line" >&2
		exit 2
	fi
	cp -p "$acl" "$acl.image"
	rm -f "$acl"
	for key in $keys; do
		case "$key" in
		*/* | .*)
			echo "guix-matrix: $trust_file: $key is not a key file name" >&2
			exit 2
			;;
		esac
		guix archive --authorize <"/etc/guix-matrix/substitutes/$key"
	done
	pull_args+=(--substitute-urls="$urls")
	install_args+=(--substitute-urls="$urls")
	echo "guix-matrix: this pull trusts $keys only, from $urls"
}

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

# The registration times of the store database, as of the epoch.
settle_db() {
	[ -n "$epoch" ] || return 0
	guile -c "(use-modules (sqlite3))
		(let ((db (sqlite-open \"/var/guix/db/db.sqlite\")))
		  (sqlite-exec db \"UPDATE ValidPaths SET registrationTime = $epoch;\")
		  (sqlite-close db))"
}

main() {
	case "${1:-}" in
	--epoch)
		epoch=${2:-}
		case "$epoch" in
		'' | *[!0-9]*)
			echo "guix-matrix: --epoch takes seconds since 1970, not '$epoch'" >&2
			exit 2
			;;
		esac
		;;
	'') ;;
	*)
		echo "guix-matrix: usage: guix-pull.sh [--epoch SECONDS]" >&2
		exit 2
		;;
	esac
	trap cleanup EXIT
	local pinned
	pinned=$(grep -o '(commit "[0-9a-f]*")' "$channels" | cut -d'"' -f2)
	started=$(mktemp)
	trust_only
	pull
	# From here on the pulled guix (PATH and the /usr/local/bin wrappers).
	# shellcheck source=/dev/null # scripts/profile.sh, linted on its own
	. /etc/guix-matrix/profile.sh
	hash -r

	# Keep one generation: the pulled one.
	guix pull --delete-generations || true
	guix package --delete-generations || true

	guix install "${install_args[@]}" nss-certs
	guix gc

	keep_pin "$pinned"
	guix describe
	guix --version
	settle_db
}

main "$@"
