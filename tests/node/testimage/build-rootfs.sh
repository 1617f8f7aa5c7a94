#!/usr/bin/env bash
# The test image's root filesystem (busybox's /bin/sh and tools, python3 3.11) from Debian
# packages, for `make images`; no Docker and no registry.
#
#   build-rootfs.sh download PACKAGES_TXT DEBS_DIR   apt-get download the packages (no root
#                                                    needed; the apt lists must exist)
#   build-rootfs.sh rootfs DEBS_DIR ROOTFS           unpack them with dpkg-deb -x, merge /usr,
#                                                    prune, and check the result under chroot
#                                                    (root only; skipped with a note otherwise)
set -euo pipefail

# Extension modules whose shared libraries the image leaves out (ssl, sqlite, ffi, lzma, ...):
# nothing the pods run needs them, and importing one would fail on a missing library. hashlib
# falls back to its built-in sha/md5 without _hashlib.
DROPPED_MODULES=(_bz2 _crypt _ctypes _curses _curses_panel _dbm _hashlib _lzma _sqlite3 _ssl
	_uuid nis readline)
# Parts of the packages no pod uses: docs, iconv's converters (Python has its own codecs), the
# stdlib's tests, GUI and packaging tools, and the build config.
PRUNED=(usr/share usr/lib/binfmt.d usr/lib/x86_64-linux-gnu/gconv usr/lib/python3.11/test
	usr/lib/python3.11/idlelib usr/lib/python3.11/tkinter usr/lib/python3.11/turtledemo
	usr/lib/python3.11/ensurepip usr/lib/python3.11/lib2to3 usr/lib/python3.11/pydoc_data
	usr/lib/python3.11/config-3.11-x86_64-linux-gnu)

die() { echo "build-rootfs.sh: $*" >&2; exit 1; }

# apt-get download into $1 (set -o pipefail keeps apt-get's status through the filter).
fetch() {
	local into=$1
	shift
	# apt warns that root downloads "unsandboxed" when _apt cannot write here: expected, dropped.
	(cd "$into" && apt-get download "$@" 2>&1 | { grep -v 'unsandboxed as root' || true; })
}

download() {
	local packages_txt=$1 debs=$2 packages
	mapfile -t packages < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$packages_txt")
	rm -rf "$debs.tmp" && mkdir -p "$debs.tmp"
	if ! fetch "$debs.tmp" "${packages[@]}"; then
		# A fresh machine may have no package lists yet: as root, fetch them once and retry.
		if [[ $(id -u) == 0 ]] && apt-get update -qq >/dev/null 2>&1 && fetch "$debs.tmp" "${packages[@]}"; then
			:
		else
			die "apt-get download failed for: ${packages[*]}. It needs Debian's package lists:" \
				"run 'apt-get update' once as root (the mirrors must be reachable), then make images again"
		fi
	fi
	for deb in "$debs.tmp"/*.deb; do
		printf '%s=%s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)"
	done | sort >"$debs.tmp/versions.txt"
	rm -rf "$debs" && mv "$debs.tmp" "$debs"
	echo "==> $debs: $(wc -l <"$debs/versions.txt") Debian packages"
}

rootfs() {
	local debs=$1 out=$2 dir applet target module
	local r="$out.tmp"
	rm -rf "$r" && mkdir -p "$r"
	for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$r"; done
	# Bookworm's merged /usr: packages still ship /bin and /lib paths, dpkg-deb -x does not merge.
	for dir in bin sbin lib lib64; do
		[[ -d $r/$dir && ! -L $r/$dir ]] || continue
		mkdir -p "$r/usr/$dir" && cp -a "$r/$dir/." "$r/usr/$dir/" && rm -rf "${r:?}/$dir"
		ln -s "usr/$dir" "$r/$dir"
	done
	# Every busybox applet as a symlink where busybox installs it (never over a real file).
	while read -r applet; do
		target="$r/usr/${applet#usr/}"
		[[ -e $target || -L $target ]] || ln -s /usr/bin/busybox "$target"
	done < <(mkdir -p "$r/usr/sbin" && "$r/usr/bin/busybox" --list-full)
	ln -sfn python3.11 "$r/usr/bin/python3"
	for module in "${DROPPED_MODULES[@]}"; do
		rm -f "$r"/usr/lib/python3.11/lib-dynload/"$module".cpython-311-*.so
	done
	for dir in "${PRUNED[@]}"; do rm -rf "${r:?}/$dir"; done
	mkdir -p "$r/proc" "$r/sys" "$r/dev" "$r/root" "$r/tmp" && chmod 1777 "$r/tmp" && chmod 700 "$r/root"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
	cp "$debs/versions.txt" "$r/etc/dcu-test-packages.txt"
	if [[ $(id -u) == 0 ]]; then
		chroot "$r" /bin/sh -c 'python3 -I -S -c "import json, zipfile; print(1)"' >/dev/null \
			|| die "$r: /bin/sh or python3 does not run under chroot"
		# Every extension module left must load: a missing library is found here, not in a pod.
		chroot "$r" /usr/bin/python3 -I -S -c "$(cat <<'PY'
import importlib, os, sys
failed = []
for name in sorted(os.listdir("/usr/lib/python3.11/lib-dynload")):
    try:
        importlib.import_module(name.split(".")[0])
    except ImportError as exc:
        failed.append(f"{name}: {exc}")
sys.exit("\n".join(failed) or None)
PY
)" || die "$r: extension modules above fail to load (add them to DROPPED_MODULES)"
	else
		echo "build-rootfs.sh: not root: skipped the chroot check of $out" >&2
	fi
	rm -rf "$out" && mv "$r" "$out"
	echo "==> $out: $(du -sh "$out" | cut -f1)"
}

case ${1:-} in
download) [[ $# == 3 ]] || die "usage: $0 download PACKAGES_TXT DEBS_DIR"; download "$2" "$3" ;;
rootfs) [[ $# == 3 ]] || die "usage: $0 rootfs DEBS_DIR ROOTFS"; rootfs "$2" "$3" ;;
*) die "usage: $0 download PACKAGES_TXT DEBS_DIR | rootfs DEBS_DIR ROOTFS" ;;
esac
