#!/bin/sh
# /usr/local/bin/guix and /usr/local/bin/guix-daemon: the pulled generation's
# program when there is one, else Debian's. A shell that looked `guix` up
# before `guix pull` made ~/.config/guix/current (`sh -c 'guix pull && guix
# install hello'`) keeps this path, and still gets the pinned Guix.
program=${0##*/}
current=${GUIX_MATRIX_CURRENT:-${HOME:-/root}/.config/guix/current}
if [ -x "$current/bin/$program" ]; then
	exec "$current/bin/$program" "$@"
fi
exec "/usr/bin/$program" "$@"
