# shellcheck shell=sh
# Prefer the Guix that `guix pull` made (the pinned one) over Debian's: its
# bin/ first on PATH and its etc/profile sourced, as Guix's own installation
# does for login shells. Sourced by the entry point and by shells
# (/etc/profile.d, /etc/bash.bashrc, BASH_ENV for `bash -c`); idempotent.
guix_matrix_current=${GUIX_MATRIX_CURRENT:-${HOME:-/root}/.config/guix/current}
case ":$PATH:" in
*":$guix_matrix_current/bin:"*) ;;
*) PATH="$guix_matrix_current/bin:$PATH" ;;
esac
export PATH
if [ -f "$guix_matrix_current/etc/profile" ] && [ "${GUIX_PROFILE:-}" != "$guix_matrix_current" ]; then
	GUIX_PROFILE=$guix_matrix_current
	export GUIX_PROFILE
	# Guix's profile reads unset variables (${GUIX_LOCPATH:+...}): no set -u there.
	case $- in
	*u*)
		set +u
		# shellcheck disable=SC1091
		. "$GUIX_PROFILE/etc/profile"
		set -u
		;;
	*)
		# shellcheck disable=SC1091
		. "$GUIX_PROFILE/etc/profile"
		;;
	esac
fi
unset guix_matrix_current
