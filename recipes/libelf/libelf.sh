#!/bin/sh
# Build elfutils' libelf alone, without elfutils' configure: the static libelf.a, its headers
# libelf.h, gelf.h, nlist.h and a libelf.pc. Run in the unpacked elfutils tree.
#
#   libelf.sh config    probe the C compiler and write ./config.h (what configure would, for
#                       the few HAVE_* libelf and lib/ read)
#   libelf.sh compile   compile libelf/'s libelf_a_SOURCES (read from libelf/Makefile.am, so
#                       the list is upstream's) into libelf/libelf.a, make -j"$JOBS"
#   libelf.sh install   into "$DESTDIR": $LIBDIR/libelf.a, $PREFIX/include/{libelf,gelf,
#                       nlist}.h, $LIBDIR/pkgconfig/libelf.pc
#
# Why not configure: elfutils' configure stops without argp, fts and obstack, which musl
# lacks and which only the tools, libdw and libdwfl use; libelf itself needs a C99 compiler,
# POSIX and zlib (elf_compress.c). Static only: the kernel's objtool is its one user here.
# The environment gives CC (default cc), AR (ar), CFLAGS (-O2 -g), CPPFLAGS and LDFLAGS (where
# zlib is, if not in the compiler's paths), and for install DESTDIR, PREFIX, LIBDIR.
set -eu

CC=${CC:-cc}
AR=${AR:-ar}
CFLAGS=${CFLAGS:--O2 -g}
CPPFLAGS=${CPPFLAGS:-}

# Does a program with this text compile (and link, $2 = link, with the libraries $3) with $CC?
probe() {
	printf '%s\n' "$1" >conftest.c
	r=0
	if [ "${2:-}" = link ]; then
		# shellcheck disable=SC2086 # flags are word lists
		$CC $CPPFLAGS $CFLAGS -o conftest conftest.c ${LDFLAGS:-} ${3:-} >/dev/null 2>&1 || r=1
	else
		# shellcheck disable=SC2086
		$CC $CPPFLAGS $CFLAGS -Werror -c -o conftest.o conftest.c >/dev/null 2>&1 || r=1
	fi
	rm -f conftest.c conftest.o conftest
	return $r
}

# HAVE_DECL_<NAME> 1 or 0: as configure's AC_CHECK_DECLS, a macro counts (musl 1.2 has
# mempcpy, memrchr, reallocarray and powerof2 but not rawmemchr; lib/system.h supplies
# what is missing)
decl() {
	if probe "#define _GNU_SOURCE
#include <$2>
int main(void) {
#ifndef $1
(void) $1;
#endif
return 0; }"; then v=1; else v=0; fi
	echo "#define HAVE_DECL_$(echo "$1" | tr 'a-z' 'A-Z') $v"
}

config() {
	for f in configure.ac libelf/Makefile.am config/libelf.pc.in; do
		[ -f "$f" ] || {
			echo "libelf.sh: no $f here ($(pwd)): not an elfutils source tree" >&2
			exit 1
		}
	done
	probe 'int main(void) { return 0; }' link || {
		echo "libelf.sh: $CC cannot link a C program" >&2
		exit 1
	}
	probe '#include <zlib.h>
int main(void) { return deflateInit(0, 0); }' link -lz || {
		echo "libelf.sh: $CC finds no zlib (zlib.h and -lz; set CPPFLAGS/LDFLAGS)" >&2
		exit 1
	}
	version=$(sed -n 's/^AC_INIT(\[[^]]*\],\[\([^]]*\)\].*/\1/p' configure.ac)
	[ -n "$version" ] || {
		echo "libelf.sh: no AC_INIT version in configure.ac" >&2
		exit 1
	}
	{
		echo "/* written by libelf.sh config for $CC */"
		echo "#define PACKAGE \"elfutils\""
		echo "#define PACKAGE_NAME \"elfutils\""
		echo "#define PACKAGE_VERSION \"$version\""
		echo "#define VERSION \"$version\""
		echo "#define _FILE_OFFSET_BITS 64"
		decl mempcpy string.h
		decl memrchr string.h
		decl rawmemchr string.h
		decl reallocarray stdlib.h
		decl powerof2 sys/param.h
		# musl has no error.h: lib/system.h then only declares error(), which libelf never calls
		if probe '#include <error.h>'; then echo "#define HAVE_ERROR_H 1"; else
			echo "#define HAVE_ERR_H 1"
		fi
		probe '#define _GNU_SOURCE
#include <sys/mman.h>
int main(void) { return mremap(0, 0, 0, 0) != 0; }' && echo "#define HAVE_MREMAP 1"
		probe '#include <stdatomic.h>' && echo "#define HAVE_STDATOMIC_H 1"
		probe 'void f(void) __attribute__((visibility("hidden"))); void f(void) {}' &&
			echo "#define HAVE_VISIBILITY 1"
		probe 'struct __attribute__((packed, gcc_struct)) s { char c; int i; }; struct s v;' &&
			echo "#define HAVE_GCC_STRUCT 1"
		probe 'int f(int i) { switch (i) { case 1: i++; __attribute__((fallthrough)); default: return i; } }' &&
			echo "#define HAVE_FALLTHROUGH 1"
		echo "#include <eu-config.h>"
	} >config.h.new
	mv config.h.new config.h
	cat config.h
}

compile() {
	[ -f config.h ] || {
		echo "libelf.sh: no config.h: run 'libelf.sh config' first" >&2
		exit 1
	}
	# libelf_a_SOURCES = a.c b.c \ ... up to the first line without a trailing backslash
	sources=$(sed -n '/^libelf_a_SOURCES[[:blank:]]*=/,/[^\\]$/p' libelf/Makefile.am |
		sed 's/^libelf_a_SOURCES[[:blank:]]*=//; s/\\$//' | tr -s ' \t\n' '   ')
	objects=$(for s in $sources; do printf '%s ' "${s%.c}.o"; done)
	[ -n "$objects" ] || {
		echo "libelf.sh: no libelf_a_SOURCES in libelf/Makefile.am" >&2
		exit 1
	}
	# as config/eu.am: -std=gnu99, -D_GNU_SOURCE -DHAVE_CONFIG_H, config.h from the top,
	# lib/'s headers, and libelf/ first (its own elf.h, as upstream builds it)
	cat >libelf/libelf.mk <<EOF
OBJECTS = $objects
libelf.a: \$(OBJECTS)
	rm -f \$@
	$AR crD \$@ \$(OBJECTS)
.c.o:
	$CC -std=gnu99 $CFLAGS -D_GNU_SOURCE -DHAVE_CONFIG_H -I. -I.. -I../lib $CPPFLAGS -c -o \$@ \$<
EOF
	make -C libelf -f libelf.mk -j"${JOBS:-1}" libelf.a
	echo "libelf.sh: libelf/libelf.a: $(echo "$objects" | wc -w) objects"
}

install_libelf() {
	for v in DESTDIR PREFIX LIBDIR; do
		eval "[ -n \"\${$v:-}\" ]" || {
			echo "libelf.sh install: $v is not set" >&2
			exit 1
		}
	done
	[ -f libelf/libelf.a ] || {
		echo "libelf.sh: no libelf/libelf.a: run 'libelf.sh compile' first" >&2
		exit 1
	}
	version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' config.h)
	mkdir -p "$DESTDIR$LIBDIR/pkgconfig" "$DESTDIR$PREFIX/include"
	cp libelf/libelf.a "$DESTDIR$LIBDIR/libelf.a"
	chmod 644 "$DESTDIR$LIBDIR/libelf.a"
	for h in libelf.h gelf.h nlist.h; do
		cp "libelf/$h" "$DESTDIR$PREFIX/include/$h"
		chmod 644 "$DESTDIR$PREFIX/include/$h"
	done
	# upstream's libelf.pc, but static only: zlib goes into Libs (a plain `pkg-config --libs
	# libelf`, as objtool's Makefile runs it, must link), not Requires.private (which also
	# makes pkg-config fail where no zlib.pc is installed)
	sed -e "s|@prefix@|$PREFIX|; s|@exec_prefix@|$PREFIX|; s|@libdir@|$LIBDIR|" \
		-e "s|@includedir@|$PREFIX/include|; s|@VERSION@|$version|" \
		-e 's|^Libs: .*|Libs: -L${libdir} -lelf -lz|' -e '/^Requires.private:/d' \
		config/libelf.pc.in >"$DESTDIR$LIBDIR/pkgconfig/libelf.pc"
}

case ${1:-} in
config) config ;;
compile) compile ;;
install) install_libelf ;;
*)
	echo "usage: libelf.sh config|compile|install" >&2
	exit 2
	;;
esac
