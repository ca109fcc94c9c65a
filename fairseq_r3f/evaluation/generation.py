"""fairseq-generate for the evaluation tools: its whole output into a log file, a progress bar on the terminal,
and the first-ranked hypothesis of every sample id.

fairseq-generate prints each sentence's n-best list in rank order (``H-<id>`` lines with the hypothesis after
BPE removal, ``D-<id>`` lines detokenised), batch by batch, so sentences come out of test-set order: a
hypothesis belongs to the reference of its sample id, and only the first line of each id is its rank-1 output.
"""

import shlex
import subprocess
import sys
from typing import Callable, Dict, List, Sequence


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
