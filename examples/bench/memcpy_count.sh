#!/usr/bin/env bash
# Every `memcpy` of 128 bytes or more one runner case makes, by size and caller
# (issue 19): how many times a request, a response or a service is copied between
# the layers, which `perf` only shows as time spent in `memmove`.
#
#   examples/bench/memcpy_count.sh [CASE] [BINARY]
#
# CASE defaults to `full_stack` (any name `bench_runner --only =CASE` takes); BINARY
# to target/release/examples/bench_runner (build it first with
# `cargo build --release --example bench_runner`). Needs a C compiler and
# `addr2line` (binutils). A small library loaded before libc's counts each copy by
# size and return address; the counts are divided by the requests the case made
# (5 rounds + a 4 % warm-up of 100,000), so the harness's own copies, made for
# the bare service too, show under `bench_runner::` and are left out of the total.
set -euo pipefail
case=${1:-full_stack}
bin=${2:-target/release/examples/bench_runner}
iters=100000
requests=520000
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/count.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#define SLOTS 4096
static void *where[SLOTS];
static size_t size[SLOTS];
static unsigned long count[SLOTS];
void *memcpy(void *dst, const void *src, size_t n) {
    if (n >= 128) {
        void *ra = __builtin_return_address(0);
        unsigned h = (unsigned)(((unsigned long)ra * 31 + n) % SLOTS);
        for (int k = 0; k < SLOTS; k++) {
            unsigned j = (h + k) % SLOTS;
            if (where[j] == ra && size[j] == n) { count[j]++; break; }
            if (!where[j]) { where[j] = ra; size[j] = n; count[j] = 1; break; }
        }
    }
    char *d = dst;
    const char *s = src;
    for (size_t i = 0; i < n; i++) d[i] = s[i];
    return dst;
}
__attribute__((destructor)) static void report(void) {
    Dl_info info;
    for (int i = 0; i < SLOTS; i++) {
        if (count[i] > 100000 && dladdr(where[i], &info)) {
            fprintf(stderr, "memcpy %zu %lu 0x%lx\n", size[i], count[i],
                    (unsigned long)((char *)where[i] - (char *)info.dli_fbase));
        }
    }
}
EOF
cc -O1 -shared -fPIC -fno-builtin -o "$dir/count.so" "$dir/count.c" -ldl
LD_PRELOAD="$dir/count.so" "$bin" --only "=$case" --iters "$iters" 2>&1 >/dev/null \
    | awk '/^memcpy / { print $2, $3, $4 }' | sort -n > "$dir/counts"
total=0
while read -r bytes calls addr; do
    fn=$(addr2line -f -C -e "$bin" "$addr" | head -1 | cut -c1-100)
    per=$(awk -v c="$calls" -v r="$requests" 'BEGIN { printf "%.1f", c / r }')
    printf '%5d bytes  %4s a request  %s\n' "$bytes" "$per" "$fn"
    case $fn in bench_runner::*) ;; *) total=$(awk -v t="$total" -v p="$per" 'BEGIN { print t + p }') ;; esac
done < "$dir/counts"
echo "$case: $total copies of 128 bytes or more a request in the layers"
