#!/usr/bin/env bash
# Creates .venv/ at the repository root with a CPU torch, fairseq and this plugin (editable).
#
#   bash scripts/install.sh            # fresh machine: torch 2.13 (CPU) + fairseq-fixed 0.12.3.1
#   FAIRSEQ=skip bash scripts/install.sh   # you bring your own fairseq >= 0.12 in the active env
#
# fairseq-fixed is fairseq main re-released with the Python 3.11 fixes. It must be built against the
# torch/numpy/cython already installed (--no-build-isolation) and without its declared dependencies
# (--no-deps): it declares torchaudio, which would pull a multi-GB CUDA torch and is not needed for text.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
python=${PYTHON:-python3}
stamp=$venv/.fairseq-r3f-installed

if [[ -f $stamp && $stamp -nt $root/pyproject.toml && $stamp -nt $root/scripts/install.sh ]]; then
  exit 0
fi

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 8))' \
  || { echo "install.sh: Python >= 3.8 is needed (found $("$python" --version))" >&2; exit 1; }

[[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

"${pip[@]}" --upgrade pip setuptools wheel
if [[ ${FAIRSEQ:-fixed} != skip ]]; then
  # torch==2.13.0 is the CPU build on these machines; an unpinned torch pulls several GB of CUDA.
  "${pip[@]}" "torch==${TORCH_VERSION:-2.13.0}" cython numpy
  "${pip[@]}" hydra-core==1.3.2 omegaconf==2.3.0 regex sacrebleu tqdm bitarray scikit-learn packaging cffi
  if ! "$venv/bin/python" -c 'import fairseq' 2>/dev/null; then
    echo "install.sh: building fairseq-fixed 0.12.3.1 (about 3 minutes)" >&2
    "${pip[@]}" --no-build-isolation --no-deps fairseq-fixed==0.12.3.1
  fi
fi
"${pip[@]}" -e "$root[eval,test]"
touch "$stamp"
