"""fairseq-generate for the evaluation tools: its whole output into a log file, a progress bar on the terminal,
and the first-ranked hypothesis of every sample id.

fairseq-generate prints each sentence's n-best list in rank order (``H-<id>`` lines with the hypothesis after
BPE removal, ``D-<id>`` lines detokenised), batch by batch, so sentences come out of test-set order: a
hypothesis belongs to the reference of its sample id, and only the first line of each id is its rank-1 output.
"""

import hashlib
import json
import os
import shlex
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Sequence

import fairseq

import fairseq_r3f


class GenerationError(RuntimeError):
    pass


def first_ranked(lines, prefix: str, clean: Callable[[str], str] = str.strip) -> Dict[int, str]:
    """{sample id: cleaned text} from the first ``PREFIX<id>\\tscore\\ttext`` line of each id."""
    hypotheses: Dict[int, str] = {}
    for line in lines:
        if line.startswith(prefix):
            fields = line.rstrip("\n").split("\t")
            sample_id = int(fields[0][len(prefix):])
            if sample_id not in hypotheses:
                hypotheses[sample_id] = clean(fields[2] if len(fields) > 2 else "")
    return hypotheses


def generate(command: Sequence[str], log_path: str, expected: int, prefix: str,
             clean: Callable[[str], str] = str.strip, unit: str = "sent") -> List[str]:
    """Runs ``command`` (a fairseq-generate command line) with its output in ``log_path`` and returns the rank-1
    hypotheses of sample ids 0 .. expected - 1, in that order; stops when it fails or leaves an id out."""
    from tqdm import tqdm

    print(f"generating {expected} {unit}s; fairseq-generate's output: {log_path}", file=sys.stderr)
    tail: List[str] = []
    seen = set()

    def followed(stream):
        for line in stream:
            log.write(line)
            tail[:] = (tail + [line])[-20:]
            if line.startswith(prefix):
                sample_id = line[len(prefix):].split("\t", 1)[0]
                if sample_id not in seen:
                    seen.add(sample_id)
                    bar.update()
            yield line

    with open(log_path, "w", encoding="utf-8") as log, \
            tqdm(total=expected, desc="generate", unit=unit, file=sys.stderr, mininterval=1) as bar:
        log.write("# " + shlex.join(command) + "\n")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, encoding="utf-8", errors="replace")
        hypotheses = first_ranked(followed(proc.stdout), prefix, clean)
        returncode = proc.wait()
    if returncode != 0:
        raise GenerationError(f"fairseq-generate failed (exit status {returncode}); its output is in {log_path}, "
                              f"which ends:\n" + "".join("  " + line for line in tail).rstrip())
    missing = sorted(set(range(expected)) - set(hypotheses))
    if missing or len(hypotheses) != expected:
        raise GenerationError(f"fairseq-generate wrote hypotheses for {len(hypotheses)} sample ids, the references "
                              f"have {expected} (first ids without one: {missing[:5]}); see {log_path}")
    return [hypotheses[i] for i in range(expected)]


# -- the key of a cached evaluation -------------------------------------------------------------------------------
#
# A score saved next to a run is reused only while everything it was computed from is unchanged: the checkpoint,
# the references, every setting of generation and scoring, and the versions of the plugin and fairseq. A date
# (a score newer than its checkpoint) says none of that.

_EDGE = 1 << 20  # how much of each end of a checkpoint enters its fingerprint


def checkpoint_fingerprint(path: str) -> Dict:
    """A checkpoint's identity without reading all of it: size, modification time (ns), inode, and the sha256 of
    its first and last MB. Saving a checkpoint writes a new file (new inode and time) and torch's format ends
    with the tensors' data, so a changed checkpoint changes the fingerprint; copying one keeps only its bytes'
    part, and a copy is scored again."""
    info = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(_EDGE))
        if info.st_size > 2 * _EDGE:
            f.seek(-_EDGE, os.SEEK_END)
            digest.update(f.read(_EDGE))
        else:
            digest.update(f.read())
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "inode": info.st_ino, "sha256_ends": digest.hexdigest()}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluation_key(checkpoint: str, references: Optional[str], **settings) -> Dict:
    """The key a cached score is valid for: the checkpoint's fingerprint, the references' sha256 (None: the
    references are among ``settings``), ``settings`` (tokenizer, generate flags, subset, ...) and the plugin's and
    fairseq's versions."""
    return json.loads(json.dumps({
        "checkpoint": checkpoint_fingerprint(checkpoint), "references": references and file_sha256(references),
        "fairseq_r3f": fairseq_r3f.__version__, "fairseq": fairseq.__version__, **settings}, sort_keys=True))


def cached_result(path: str, key: Dict) -> Optional[Dict]:
    """The result saved in ``path`` when it was computed under ``key``; None otherwise (absent, damaged, or any
    part of the key changed)."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return result if isinstance(result, dict) and result.get("key") == key else None
