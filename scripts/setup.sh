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

# The cloud side's tests (moto server) and template check (aws-sam-translator, cfn-lint), from
# PyPI into a virtual environment of their own, reinstalled only when the pinned list changes.
# `setup_python_tools` exports ACCESO_MOTO_PYTHON, the python that has them.
acceso_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
setup_python_tools() {
    local venv req stamp
    venv="${ACCESO_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/acceso/py-venv}"
    req="$acceso_root/lambda/requirements-test.txt"
    stamp="$venv/.acceso-requirements"
    if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
        if ! command -v python3 >/dev/null 2>&1; then
            echo "installing: python3" >&2
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >&2
        fi
        rm -rf "$venv"
        # Debian's python3 makes virtual environments only with python3-venv.
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            echo "installing: python3-venv" >&2
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2
            rm -rf "$venv"
            python3 -m venv "$venv"
        fi
        echo "installing the Python test tools into $venv: $(grep -v '^#' "$req" | tr '\n' ' ')" >&2
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
        cp "$req" "$stamp"
    fi
    export ACCESO_MOTO_PYTHON="$venv/bin/python"
}

# Never let the build fetch toolchains: use what is installed.
export RUSTUP_AUTO_INSTALL=0
cd "$(dirname "${BASH_SOURCE[0]}")/.."
