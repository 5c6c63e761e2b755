# Unpacks what scripts/gpu_stage.sh staged and the device tool carried as
# .gpuc/ (gzip- or xz-compressed binaries and the skills, under the 64 MiB
# carry limit together with the tracked files)
# into the .gpu/ layout run_suite.sh and the test binaries expect, and sets
# the environment the test binaries need. Source it on the GPU machine:
#     source scripts/gpu/prep_carried.sh
mkdir -p .gpu/target/wasm32-wasip2/release .gpu/skills
for f in .gpuc/*.gz .gpuc/*.xz; do
  [ -f "$f" ] || continue
  b=$(basename "${f%.*}")
  case "$f" in *.gz) gunzip -c "$f" > ".gpu/$b" ;; *.xz) xz -dc "$f" > ".gpu/$b" ;; esac
  chmod +x ".gpu/$b"
done
# skills: a directory .gpuc/skills/ or an archive .gpuc/skills.tar.xz
[ -f .gpuc/skills.tar.xz ] && tar xJf .gpuc/skills.tar.xz -C .gpu/skills
[ -d .gpuc/skills ] && cp .gpuc/skills/*.wasm .gpu/skills/
cp .gpu/skills/*.wasm .gpu/target/wasm32-wasip2/release/
export HOST_TEST_ROOT=$PWD CARGO_TARGET_DIR=$PWD/.gpu/target LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
