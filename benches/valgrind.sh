# Sourced by benches/callgrind.sh and benches/calls.sh: installs valgrind
# from Debian's packages when it is missing.
if ! command -v valgrind >/dev/null; then
    as_root=()
    if [ "$(id -u)" != 0 ]; then as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
