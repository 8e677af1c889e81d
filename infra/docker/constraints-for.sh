#!/bin/sh
# Print constraints.txt for an image flavour. One source of truth: the repo's
# constraints.txt (one resolver pass). The only line that differs per flavour is
# torch's local version label: +cpu (as pinned) or the CUDA build (e.g. +cu130).
#   usage: constraints-for.sh CONSTRAINTS_FILE cpu|cuXYZ
set -eu
file="$1"
flavour="$2"
case "$flavour" in
  cpu|cu[0-9]*) ;;
  *) echo "constraints-for.sh: flavour must be cpu or cuXYZ, got '$flavour'" >&2; exit 2 ;;
esac
n=$(grep -c '^torch==[^+]*+cpu$' "$file" || true)
if [ "$n" != "1" ]; then
  echo "constraints-for.sh: expected exactly one 'torch==X+cpu' line in $file, found $n" >&2
  exit 2
fi
sed -E "s/^torch==([^+]+)\+cpu$/torch==\1+${flavour}/" "$file"
