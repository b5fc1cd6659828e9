#!/usr/bin/env bash
# guix-matrix-pin-check [GUIX-PULL-OPTIONS...]: after a `guix pull` with the
# same options, say whether each pinned channel commit is sound, and if not,
# why and how to fix it. guix pull itself checks out a pinned commit that is
# on another branch without a word, and reports a missing commit or a
# downgrade only as a libgit2 or Guile error.
#
# Looks at the checkout guix pull left in its cache and at the profile's
# current generation; needs neither the network nor the daemon.
#   exit 0  every pin is sound (or could not be judged: said why)
#   exit 1  a pin is wrong: cause and fix printed
#   exit 2  the channels could not be read
#
# GUIX_MATRIX_PULL_STARTED: a file created before the pull; a checkout not
# fetched since then (network down) is not used to declare a commit missing.
set -euo pipefail

say() { echo "guix-matrix: pin check: $*"; }
short() { echo "${1:0:12}"; }

allow_downgrades=0
for arg in "$@"; do
	[ "$arg" != "--allow-downgrades" ] || allow_downgrades=1
done

# Debian's Guile with Debian's Guix modules, also after a pull: the pulled
# profile's GUILE_LOAD_PATH holds modules compiled for another Guile.
if ! listing=$(env -u GUILE_LOAD_PATH -u GUILE_LOAD_COMPILED_PATH /usr/bin/guile \
	--no-auto-compile /usr/local/lib/guix-matrix/pull-channels.scm "$@" 2>&1); then
	say "cannot read the channels guix pull was given: $listing"
	exit 2
fi

file=$(awk -F'\t' '$1 == "file" { print $2 }' <<<"$listing")
problems=0

# The commit the current generation was pulled from for channel $1, if any.
current_commit() {
	awk -F'\t' -v name="$1" '$1 == "current" && $2 == name { print $5 }' <<<"$listing"
}

fetched_this_time() {
	local dir="$1" since="${GUIX_MATRIX_PULL_STARTED:-}"
	[ -z "$since" ] && return 0
	[ -e "$dir/.git/FETCH_HEAD" ] && [ "$dir/.git/FETCH_HEAD" -nt "$since" ]
}

branch_head() {
	git -C "$1" rev-parse -q --verify "refs/remotes/origin/$2^{commit}" 2>/dev/null
}

check_channel() {
	local name="$1" url="$2" branch="$3" commit="$4" dir="$5"
	local target on head current

	if [ ! -d "$dir/.git" ]; then
		say "channel '$name': no checkout of $url in $dir yet (guix pull stopped before fetching it); nothing to judge"
		return 0
	fi
	if [ -n "$commit" ]; then
		if ! target=$(git -C "$dir" rev-parse -q --verify "$commit^{commit}" 2>/dev/null); then
			if ! fetched_this_time "$dir"; then
				say "channel '$name': commit $commit is not in the checkout of $url, which was not fetched by this pull (network?); cannot tell whether it exists"
				return 0
			fi
			say "channel '$name' pins commit $commit, which does not exist in $url (no branch or tag there holds it: a typo, a commit of a fork, or rewritten history)"
			head=""
			[ -z "$branch" ] || head=$(branch_head "$dir" "$branch") || true
			echo "  fix: pin a commit of branch ${branch:-master} of $url${head:+ (its head is $head)} in $file"
			problems=$((problems + 1))
			return 0
		fi
		if [ -n "$branch" ]; then
			if ! head=$(branch_head "$dir" "$branch"); then
				say "channel '$name' names branch $branch, which does not exist in $url"
				echo "  fix: set (branch \"...\") to one of: $(git -C "$dir" branch -r --format='%(refname:lstrip=3)' | grep -vx HEAD | paste -sd' ')"
				problems=$((problems + 1))
				return 0
			fi
			if ! git -C "$dir" merge-base --is-ancestor "$target" "$head"; then
				on=$(git -C "$dir" branch -r --contains "$target" --format='%(refname:lstrip=3)' | grep -vx HEAD | paste -sd' ')
				say "channel '$name' pins commit $target, which is not on branch $branch of $url (it is on: ${on:-no branch}); guix pull checks it out anyway"
				echo "  fix: pin a commit of branch $branch (its head is $head) in $file, or set (branch \"${on%% *}\") if that branch is meant"
				problems=$((problems + 1))
				return 0
			fi
		fi
	elif ! target=$(branch_head "$dir" "${branch:-master}"); then
		say "channel '$name' follows branch ${branch:-master}, which does not exist in $url"
		problems=$((problems + 1))
		return 0
	fi

	current=$(current_commit "$name")
	if [ -n "$current" ] && [ "$current" != "$target" ] && [ "$allow_downgrades" -eq 0 ] &&
		git -C "$dir" cat-file -e "$current^{commit}" 2>/dev/null &&
		! git -C "$dir" merge-base --is-ancestor "$current" "$target"; then
		say "channel '$name' asks for commit $target, which is not a descendant of $current, the commit the current generation was pulled from; guix pull refuses to go back"
		if [ -n "$commit" ]; then
			echo "  fix: pin $current or a newer commit of branch ${branch:-master} in $file; to go back on purpose: guix pull --allow-downgrades"
		else
			echo "  fix: branch ${branch:-master} of $url was rewritten (its head no longer descends from what you have); if you trust it: guix pull --allow-downgrades"
		fi
		problems=$((problems + 1))
		return 0
	fi
	local since=""
	if [ "$current" = "$target" ]; then
		since=", the current generation's commit"
	elif [ -n "$current" ]; then
		since=", descends from the current generation's $(short "$current")"
	fi
	say "channel '$name' at $(short "$target")${branch:+ on branch $branch} of $url$since: ok"
}

while IFS=$'\t' read -r tag name url branch commit dir; do
	[ "$tag" = want ] || continue
	check_channel "$name" "$url" "$branch" "$commit" "$dir"
done <<<"$listing"

[ "$problems" -eq 0 ]
