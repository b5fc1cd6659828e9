#!/usr/bin/env bash
# binfmt.sh status NAME...     one line per handler: NAME<TAB>STATE<TAB>INTERPRETER<TAB>FLAGS<TAB>QEMU
# binfmt.sh register NAME...   register what is missing, leave what is right,
#                              report what is wrong (exit 3) with the fix
#   STATE: registered | missing | disabled | wrong
# Handlers come from /usr/lib/binfmt.d/NAME.conf (Debian qemu-user-static),
# registered with the F flag added; where Debian ships none (the host's own
# architecture family: qemu-i386 on amd64, qemu-x86_64 or qemu-arm on arm64)
# but has the interpreter, from /usr/local/lib/guix-matrix/binfmt.d/NAME.conf.
set -euo pipefail

dir=/proc/sys/fs/binfmt_misc
if [ ! -e "$dir/register" ]; then
	mount -t binfmt_misc binfmt_misc "$dir" || {
		echo "binfmt.sh: cannot mount binfmt_misc at $dir (run with --cap-add SYS_ADMIN --security-opt apparmor=unconfined)" >&2
		exit 2
	}
fi

action=${1:-status}
shift || true

conf_line() {
	local conf="/usr/lib/binfmt.d/$1.conf"
	[ -f "$conf" ] || [ ! -x "/usr/bin/$1" ] || conf="/usr/local/lib/guix-matrix/binfmt.d/$1.conf"
	[ -f "$conf" ] || {
		echo "binfmt.sh: no handler named $1 in qemu-user-static ($conf)" >&2
		exit 2
	}
	local line
	line=$(grep -v '^#' "$conf" | head -n1)
	# Make sure the F (fix binary) flag is there.
	case "${line##*:}" in
	*F*) echo "$line" ;;
	*) echo "${line}F" ;;
	esac
}

qemu_version() {
	local interp=$1
	if [ -x "$interp" ]; then
		"$interp" --version 2>/dev/null | head -n1 | sed 's/[[:space:]]*Copyright.*//'
	else
		echo "-"
	fi
}

state_of() {
	local name=$1 entry="$dir/$1" want want_interp want_flags interp flags
	if [ ! -e "$entry" ]; then
		printf '%s\tmissing\t-\t-\t-\n' "$name"
		return
	fi
	interp=$(sed -n 's/^interpreter //p' "$entry")
	flags=$(sed -n 's/^flags: //p' "$entry")
	want=$(conf_line "$name")
	want_interp=$(echo "$want" | cut -d: -f7)
	want_flags=$(echo "$want" | cut -d: -f8)
	if ! grep -qx enabled "$entry"; then
		printf '%s\tdisabled\t%s\t%s\t%s\n' "$name" "$interp" "$flags" "$(qemu_version "$interp")"
	elif [[ "$flags" != *F* ]] || [ "$interp" != "$want_interp" ] || [ "$(echo "$flags" | grep -o . | sort | tr -d '\n')" != "$(echo "$want_flags" | grep -o . | sort | tr -d '\n')" ]; then
		printf '%s\twrong\t%s\t%s\t%s\n' "$name" "$interp" "$flags" "$(qemu_version "$interp")"
	else
		printf '%s\tregistered\t%s\t%s\t%s\n' "$name" "$interp" "$flags" "$(qemu_version "$interp")"
	fi
}

rc=0
case "$action" in
status)
	for name in "$@"; do state_of "$name"; done
	;;
register)
	for name in "$@"; do
		line=$(state_of "$name")
		case "$(echo "$line" | cut -f2)" in
		missing)
			conf_line "$name" >"$dir/register"
			state_of "$name"
			;;
		registered) echo "$line" ;;
		*)
			echo "$line"
			echo "binfmt.sh: $name is registered but not as qemu-user-static's handler with the F flag; fix: echo -1 > $dir/$name (as root on the host), then run the harness again" >&2
			rc=3
			;;
		esac
	done
	;;
unregister)
	for name in "$@"; do
		[ ! -e "$dir/$name" ] || echo -1 >"$dir/$name"
		state_of "$name"
	done
	;;
*)
	echo "usage: binfmt.sh status|register|unregister NAME..." >&2
	exit 2
	;;
esac
exit "$rc"
