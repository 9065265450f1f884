#!/usr/bin/env bash
# Prepare what a device (GPU) machine needs beside its image, under 64 MiB in all:
#   .whl/         Python 3.12 wheels of ray[data], datatrove and the pipeline's small deps
#   .benchdata/   ../shared/data as one xz tarball (../shared does not travel)
# The image already has torch, triton, numpy, pyarrow, tokenizers, huggingface-hub, sympy,
# so those are not carried. Two wheels are slimmed because the limit is tight: ray loses
# its Java jars, its dashboard's web build and the RL/serving/tuning libraries (a build
# uses Ray Core and Ray Data only); datatrove loses its 17 MB URL blacklist (URL
# filtering is not used here). Their RECORD files are rewritten to match.
# Run here, in the repo root:  bash scripts/device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
grep -qx "/.benchdata/" .git/info/exclude 2>/dev/null || echo "/.benchdata/" >> .git/info/exclude
rm -rf .whl .benchdata && mkdir -p .whl .benchdata
dl=$(mktemp -d)
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$dl" "ray[data]==2.60.0" "datatrove==0.10.1" orjson rich pyyaml math-verify xxhash 2>&1 \
  | grep -v "WARNING: Location" || true
# Present on the device image (KINDS.md): not carried. (zstandard is left out for room:
# the readers import it only for .zst files.)
skip='^(torch|triton|nvidia_|numpy|pyarrow|tokenizers|huggingface_hub|hf_xet|sympy|mpmath|filelock|fsspec|typing_extensions|packaging|requests|urllib3|certifi|idna|charset_normalizer|tqdm|pyyaml|safetensors|jinja2|markupsafe|anyio|h11|httpx|httpcore|truststore)'
for w in "$dl"/*.whl; do
  name=$(basename "$w")
  [[ "$name" =~ $skip ]] || cp "$w" .whl/
done
python3 - <<'EOF'
import base64, hashlib, pathlib, zipfile
DROP = {
    "ray": ("ray/jars/", "ray/dashboard/client/build/", "ray/rllib/", "ray/serve/", "ray/tune/"),
    "datatrove": ("datatrove/assets/url_filterblacklists",),
}
for whl in pathlib.Path(".whl").glob("*.whl"):
    drop = DROP.get(whl.name.split("-")[0])
    if not drop:
        continue
    src = zipfile.ZipFile(whl)
    keep = [i for i in src.infolist() if not i.filename.startswith(drop)]
    tmp = whl.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        record_name = next(i.filename for i in keep if i.filename.endswith(".dist-info/RECORD"))
        lines = []
        for i in keep:
            if i.filename == record_name:
                continue
            data = src.read(i)
            out.writestr(i, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            lines.append(f"{i.filename},sha256={digest},{len(data)}")
        lines.append(f"{record_name},,")
        out.writestr(record_name, "\n".join(lines) + "\n")
    tmp.replace(whl)
EOF
tar -C ../shared -cJf .benchdata/data.tar.xz data
du -sh .whl .benchdata
git ls-files -z | du -cb --files0-from=- | tail -1 | awk '{printf "tracked files: %.1f MB\n", $1/1e6}'
du -cb .whl .benchdata | tail -1 | awk '{printf "carried: %.1f MB (limit 67.1)\n", $1/1e6}'
