#!/usr/bin/env bash
# The image's online step (the seed's option 1: run with capabilities, then
# commit): pull Guix to the commit pinned in /root/.config/guix/channels.scm,
# keep only that generation, install the certificates, collect garbage, and
# write the pin back as `guix describe` reports it.
# Run it through the entry point: /entry-point.sh /usr/local/bin/guix-pull.sh
set -exuo pipefail

channels=/root/.config/guix/channels.scm
pinned=$(grep -o '(commit "[0-9a-f]*")' "$channels" | cut -d'"' -f2)

started=$(mktemp)
pin_check() { GUIX_MATRIX_PULL_STARTED="$started" guix-matrix-pin-check --channels="$channels"; }
guix pull --channels="$channels" || {
	rc=$?
	pin_check || true
	exit "$rc"
}
# guix pull checks out a pinned commit of another branch without a word.
pin_check
profile=/root/.config/guix/current
export PATH="$profile/bin:$PATH"
hash guix

# Keep one generation: the pulled one.
guix pull --delete-generations || true
guix package --delete-generations || true

guix install nss-certs
guix gc

# The pin must not move: a plain `guix pull` later stays on it.
guix describe --format=channels >"$channels.new"
grep -q "$pinned" "$channels.new" || {
	echo "guix-matrix: guix describe does not show the pinned commit $pinned" >&2
	cat "$channels.new" >&2
	exit 1
}
mv "$channels.new" "$channels"
guix describe
