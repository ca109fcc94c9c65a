#!/usr/bin/env bash
# Creates a virtual environment (default .venv/ at the repository root) with torch, fairseq and this plugin
# (editable).
#
#   bash scripts/install.sh                  # fresh machine: torch 2.13 (CPU) + fairseq-fixed 0.12.3.1 (Python 3.11)
#   FAIRSEQ=official PYTHON=python3.10 VENV=.venv-official bash scripts/install.sh
#                                            # official fairseq 0.12.2 + torch 1.13.1 (Python 3.8 to 3.10)
#   FAIRSEQ=skip bash scripts/install.sh     # you bring your own fairseq >= 0.12 in the environment
#
# On Python >= 3.10 the plugin comes with its hf extra (transformers, accelerate, TRL, PEFT: rxf.hf), except in
# the official environment.
#
# A torch the environment already has is never replaced (TORCH_VERSION only says which one to install where
# there is none). fairseq is built without its declared dependencies (--no-deps): both releases declare
# torchaudio, which pip resolves to a release that replaces the torch with a multi-GB CUDA build and is not
# needed for text; their runtime dependencies are installed by name instead.
#
# fairseq-fixed is fairseq main re-released with the Python 3.11 fixes; it is built against the torch, numpy and
# cython already installed (--no-build-isolation). Official fairseq 0.12.2 does not import on Python >= 3.11,
# pins hydra-core 1.0.7 / omegaconf 2.0.6 (which pip >= 24.1 refuses to resolve, hence pip < 24.1 in that
# environment) and needs numpy < 1.24; its source distribution lacks the sources of one C++ extension, so it is
# built with pip's build isolation (which has no torch, so only its Cython extensions are built: all the text
# tasks need).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
python=${PYTHON:-python3}
fairseq=${FAIRSEQ:-fixed}
stamp=$venv/.fairseq-r3f-installed

case $fairseq in
  fixed | official | skip) ;;
  *) echo "install.sh: FAIRSEQ=$fairseq: use fixed (fairseq-fixed 0.12.3.1), official (fairseq 0.12.2) or skip" >&2
     exit 1 ;;
esac

if [[ -f $stamp && $stamp -nt $root/pyproject.toml && $stamp -nt $root/scripts/install.sh ]]; then
  exit 0
fi

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 8))' \
  || { echo "install.sh: Python >= 3.8 is needed (found $("$python" --version 2>&1))" >&2; exit 1; }
if [[ $fairseq == official ]] && ! "$python" -c 'import sys; sys.exit(sys.version_info >= (3, 11))'; then
  echo "install.sh: official fairseq 0.12.2 does not import on Python >= 3.11 ($("$python" --version 2>&1));" \
       "give PYTHON=python3.10 (or 3.8, 3.9), or use FAIRSEQ=fixed" >&2
  exit 1
fi

step() {  # step NAME COMMAND...: runs the command and says how long it took
  local name=$1 start=$SECONDS
  shift
  "$@"
  echo "install.sh: $name: $((SECONDS - start)) s" >&2
}

[[ -x $venv/bin/python ]] || step "virtual environment" "$python" -m venv "$venv"
vpython=$venv/bin/python
pip=("$vpython" -m pip install --disable-pip-version-check -q)
has() { "$vpython" -c "import $1" 2>/dev/null; }

if [[ $fairseq == official ]]; then
  step "pip < 24.1, setuptools, wheel" "${pip[@]}" --upgrade "pip<24.1" setuptools wheel
  if ! has torch; then
    # torch 1.13.1's wheel on PyPI carries CUDA 11.7 and needs the nvidia-* wheels it declares (about 1.4 GB)
    # even to import on a CPU machine.
    step "torch ${TORCH_VERSION:-1.13.1}" "${pip[@]}" "torch==${TORCH_VERSION:-1.13.1}"
  fi
  step "numpy < 1.24, cython" "${pip[@]}" "numpy<1.24" cython
  # fairseq 0.12.2's own (less torchaudio); the plugin's packages (scikit-learn, ...) come with the plugin below
  step "fairseq 0.12.2's dependencies" "${pip[@]}" hydra-core==1.0.7 omegaconf==2.0.6 regex sacrebleu tqdm bitarray \
    packaging cffi
  if ! has fairseq; then
    echo "install.sh: building fairseq 0.12.2 (about 1.5 minutes)" >&2
    step "fairseq 0.12.2" "${pip[@]}" --no-deps fairseq==0.12.2
  fi
elif [[ $fairseq == fixed ]]; then
  step "pip, setuptools, wheel" "${pip[@]}" --upgrade pip setuptools wheel
  if ! has torch; then
    # torch==2.13.0 is the CPU build on these machines; an unpinned torch pulls several GB of CUDA.
    step "torch ${TORCH_VERSION:-2.13.0}" "${pip[@]}" "torch==${TORCH_VERSION:-2.13.0}"
  fi
  step "numpy, cython" "${pip[@]}" cython numpy
  step "fairseq's dependencies" "${pip[@]}" hydra-core==1.3.2 omegaconf==2.3.0 regex sacrebleu tqdm bitarray \
    scikit-learn packaging cffi
  if ! has fairseq; then
    echo "install.sh: building fairseq-fixed 0.12.3.1 (about 3 minutes)" >&2
    step "fairseq-fixed 0.12.3.1" "${pip[@]}" --no-build-isolation --no-deps fairseq-fixed==0.12.3.1
  fi
else
  step "pip, setuptools, wheel" "${pip[@]}" --upgrade pip setuptools wheel
fi
# the plugin; its extras never name torch or fairseq. fairseq 0.12.2 keeps its numpy < 1.24. The HuggingFace side
# (the hf extra: transformers 5.x, which needs Python >= 3.10) goes into every environment but the official one,
# which stays as CI tests the plugin there: without transformers.
keep=()
[[ $fairseq == official ]] && keep=("numpy<1.24")
extras=eval,test
if [[ $fairseq != official ]] && "$vpython" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  extras=$extras,hf
fi
step "fairseq-r3f[$extras]" "${pip[@]}" -e "$root[$extras]" ${keep[@]+"${keep[@]}"}
touch "$stamp"
