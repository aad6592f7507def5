#!/usr/bin/env bash
# Build and install PufferLib 3.0.0 (its trainer and the Ocean C environments) into a virtualenv,
# without the internet access its setup.py assumes.
#
#   scripts/install_pufferlib.sh [PYTHON]      (default: .venv/bin/python)
#
# PufferLib's sdist downloads raylib (web build), box2d (web + linux) from GitHub while building. This
# script fetches the sdist from the package index, checks its sha256, and builds it with:
#   * empty raylib-5.5_webassembly/, box2d-web/, box2d-linux-amd64/ folders (the Linux raylib the
#     Ocean envs link against ships inside the sdist; only the box2d-based env needs the others),
#   * ocean/impulse_wars/binding.c removed (the one env that links box2d),
#   * numpy<2 (PufferLib's C bindings are built against the numpy 1 ABI),
#   * --no-build-isolation, so its torch extension is compiled against the torch already installed,
#   * a PATH without an `nvcc` this torch cannot use (a stub, or any nvcc with a CPU torch: setup.py
#     picks the CUDA kernel whenever it finds one),
#   * --no-deps, then only the packages its trainer imports (its metadata pins gymnasium<=0.29.1
#     and pulls wandb/neptune; the Ocean envs and PuffeRL run with the gymnasium already here),
#   * the installed torch pinned, so no dependency can replace it.
# Re-running reuses the downloaded archive (kept in $PUFFERLIB_BUILD_DIR, default .cache/pufferlib).
set -euo pipefail

PY=${1:-.venv/bin/python}
VERSION=3.0.0
SHA256=7df3a3e3f5f894d78d2a1f5374097890aec01473183e748abefe4f3faa10eaa9
INDEX=${PUFFERLIB_INDEX:-https://pypi.org/simple}
BUILD_DIR=${PUFFERLIB_BUILD_DIR:-.cache/pufferlib}
ARCHIVE="$BUILD_DIR/pufferlib-$VERSION.tar.gz"
SRC="$BUILD_DIR/pufferlib-$VERSION"

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "error: $PY has no torch; run 'make dev' first (PufferLib builds against the installed torch)" >&2
    exit 2
fi
mkdir -p "$BUILD_DIR"

if [ ! -f "$ARCHIVE" ] || ! echo "$SHA256  $ARCHIVE" | sha256sum -c --status; then
    echo "fetching pufferlib-$VERSION.tar.gz from $INDEX"
    "$PY" - "$INDEX" "$VERSION" "$ARCHIVE" <<'EOF'
import re, sys, urllib.request
index, version, dest = sys.argv[1:]
page = urllib.request.urlopen(f"{index.rstrip('/')}/pufferlib/", timeout=60).read().decode()
links = re.findall(r'href="([^"]*/pufferlib-' + re.escape(version) + r'\.tar\.gz[^"]*)"', page)
if not links:
    sys.exit(f"error: no pufferlib-{version}.tar.gz on {index}")
urllib.request.urlretrieve(links[0].split("#")[0], dest)
EOF
    echo "$SHA256  $ARCHIVE" | sha256sum -c --quiet
fi

rm -rf "$SRC"
tar -xzf "$ARCHIVE" -C "$BUILD_DIR"
mkdir -p "$SRC/raylib-5.5_webassembly" "$SRC/box2d-web" "$SRC/box2d-linux-amd64"
rm -f "$SRC/pufferlib/ocean/impulse_wars/binding.c"

# setup.py compiles the CUDA kernel whenever `which nvcc` finds one. With a CPU build of torch that
# kernel cannot build, so PATH entries holding an nvcc are left out; with a CUDA torch, only an nvcc
# that does not run is.
TORCH_CUDA=$("$PY" -c 'import torch; print(torch.version.cuda or "")')
clean_path=""
IFS=: read -ra dirs <<< "$PATH"
for d in "${dirs[@]}"; do
    if [ -x "$d/nvcc" ] && { [ -z "$TORCH_CUDA" ] || ! "$d/nvcc" --version >/dev/null 2>&1; }; then
        echo "leaving $d out of PATH for the build: its nvcc is not usable with this torch"
        continue
    fi
    clean_path="${clean_path:+$clean_path:}$d"
done

TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
CONSTRAINTS="$BUILD_DIR/constraints.txt"
printf 'torch==%s\nnumpy<2\n' "$TORCH_VERSION" > "$CONSTRAINTS"

"$PY" -m pip install -q -c "$CONSTRAINTS" "numpy<2" cython setuptools wheel \
    "gym<=0.23" pyro-ppl heavyball rich_argparse psutil rich
echo "building pufferlib $VERSION (C envs + torch extension; a few minutes)"
start=$(date +%s)
PATH="$clean_path" MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip install -q --no-build-isolation --no-deps -c "$CONSTRAINTS" "$SRC"
echo "built in $(( $(date +%s) - start ))s"

# Checked from the build folder: importing pufferlib links `resources` into the working folder.
(cd "$BUILD_DIR" && "$PY" - <<'EOF'
import pathlib
import pufferlib, pufferlib.ocean
from pufferlib import _C  # noqa: F401  the advantage kernel the trainer needs
n = len(list(pathlib.Path(pufferlib.ocean.__path__[0]).glob("*/binding*.so")))
print(f"pufferlib {pufferlib.__version__}: {n} Ocean C envs, trainer extension ok")
EOF
)
