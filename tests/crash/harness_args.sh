# Shared by the file-fed crash-restart harnesses (crash_test.sh,
# delta_crash_test.sh); sourced, not run. Set `here`, `root` and the
# defaults of `cycles files rows` first; this parses
#   [--cycles N] [--files F] [--rows R] [--seed S] [--bin PATH] [--keep DIR] [--state-every K]
# into them and `seed bin keep state_every` (exported as STATE_EVERY, the
# stateful queries' state_checkpoint_interval; default 1), builds the debug binary when no --bin is
# given, seeds $RANDOM, and makes the work directory `work` (removed on
# exit unless --keep).
seed=$$ bin="" keep="" state_every=1
while [ $# -gt 0 ]; do
  case "$1" in
    --cycles) cycles=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --state-every) state_every=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --quiet --bin sluice)
  bin="${CARGO_TARGET_DIR:-$root/target}/debug/sluice"
fi
RANDOM=$seed
export STATE_EVERY=$state_every
if [ -n "$keep" ]; then
  work=$keep
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
