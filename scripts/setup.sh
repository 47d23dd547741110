# Sourced by scripts/demo and scripts/test: installs what building and testing acceso needs on
# Debian bookworm or Raspberry Pi OS, and nothing when it is already there.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need_apt=()
# A C compiler for the bundled SQLite.
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# Rust: use the one on PATH (rustup or Debian's); otherwise Debian's current toolchain.
if ! command -v cargo >/dev/null 2>&1; then
    need_apt+=(cargo-web rustc-web rustfmt-web rust-web-clippy)
fi
# The default `face` feature builds the opencv crate against the system OpenCV (4.6 on
# bookworm), whose binding generator needs libclang.
for pkg in libopencv-dev clang libclang-dev "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need_apt+=("$pkg")
done

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing: ${need_apt[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
fi

# Never let the build fetch toolchains: use what is installed.
export RUSTUP_AUTO_INSTALL=0
cd "$(dirname "${BASH_SOURCE[0]}")/.."
