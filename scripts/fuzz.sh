#!/usr/bin/env bash
# Runs one fuzz target for a given time on the stable toolchain and records what it did.
#
#   scripts/fuzz.sh TARGET SECONDS        TARGET: idx | model_file | construct | onnx | arch_name | conv_model_file
#
# libFuzzer comes from the libfuzzer-sys crate; coverage instrumentation uses LLVM's
# sanitizer-coverage pass, which stable rustc enables with -Cpasses (no -Z flags, so no
# nightly). No sanitizer runs (those need nightly); panics, aborts, overflow checks and
# debug assertions are on, a run over 10 s per input counts as a hang and over
# $FUZZ_RSS_MB (default 512) MB of memory as out-of-memory.
#
# The stored corpus fuzz/corpus/TARGET seeds a working corpus in fuzz/target/corpus/TARGET
# (new inputs go there, not into the repository); crashes are written to
# fuzz/artifacts/TARGET/. The summary — executions, crashes, peak RSS (from /usr/bin/time
# -v) — goes to results/fuzz/TARGET.json, and the end of libFuzzer's log (its final
# statistics, or the crash report) to results/fuzz/TARGET.log; the full log stays in
# fuzz/target/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: scripts/fuzz.sh TARGET SECONDS}"
seconds="${2:?usage: scripts/fuzz.sh TARGET SECONDS}"
rss_mb="${FUZZ_RSS_MB:-512}"
case "$target" in idx|model_file|construct|onnx|arch_name|conv_model_file) ;; *) echo "unknown target $target" >&2; exit 2;; esac

export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS (and so the instrumentation) off build scripts, which
# are not linked with libFuzzer.
triple="$(rustc -vV | sed -n 's/^host: //p')"
(cd fuzz && cargo build --release --target "$triple" --bin "$target")
bin="fuzz/target/$triple/release/$target"

work="fuzz/target/corpus/$target"
mkdir -p "$work" "fuzz/artifacts/$target" results/fuzz
cp -n fuzz/corpus/"$target"/* "$work"/ 2>/dev/null || true
mkdir -p fuzz/target/logs
log="fuzz/target/logs/$target.log"
timefile="$(mktemp)"
set +e
/usr/bin/time -v -o "$timefile" "$bin" "$work" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb="$rss_mb" -max_len=65536 \
  -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1
status=$?
set -e
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
peak_kb=$(grep 'Maximum resident set size' "$timefile" | grep -o '[0-9]*$')
wall=$(grep 'Elapsed (wall clock)' "$timefile" | sed 's/.*: //')
crashes=$(find "fuzz/artifacts/$target" -type f | wc -l)
rm -f "$timefile"
# The full log lists every new coverage point; the results keep its end (final statistics).
tail -n 40 "$log" > "results/fuzz/$target.log"
cat > "results/fuzz/$target.json" <<JSON
{
  "target": "$target",
  "command": "scripts/fuzz.sh $target $seconds",
  "seconds": $seconds,
  "wall_clock": "$wall",
  "executions": ${execs:-0},
  "exit_status": $status,
  "crash_artifacts": $crashes,
  "peak_rss_kb": ${peak_kb:-0},
  "rss_limit_mb": $rss_mb,
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
JSON
cat "results/fuzz/$target.json"
exit $status
