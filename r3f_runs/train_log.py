"""One run's train.log: the launches it holds and the records of the final checkpoint's trajectory.

A launch that resumed says fairseq's ``Loaded checkpoint ... (epoch E @ U updates)``: then only the earlier
launch's records up to update U belong to the final checkpoint; a launch from 0 updates discards every earlier
launch. Each record gets ``elapsed``, the seconds since the run's first line over that trajectory.
"""

import datetime
import math
import re
from typing import Dict, List, Optional, Tuple

from fairseq_r3f.logs import read_json_log


LAUNCH_LINE = re.compile(r"^# \S+ start\s*$")
RESUMED_LINE = re.compile(r"Loaded checkpoint .* \(epoch \d+ @ (\d+) updates\)")
FRESH_LINE = "No existing checkpoint found"
# fairseq's log lines start with the local time, "%Y-%m-%d %H:%M:%S" (fairseq_cli/train.py).
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \| ")
# The key each record gets: seconds since the start of the run, over the launches of its final trajectory.
ELAPSED = "elapsed"


def record_updates(tag: str, record: Dict) -> Optional[float]:
    """The update a record was logged at (None for records that do not say)."""
    value = record.get("num_updates", record.get(f"{tag}_num_updates"))
    return value if isinstance(value, float) else None


def launches(text: str) -> List[Tuple[Optional[int], Dict[str, List[Dict]]]]:
    """A train.log split at its ``# <time> start`` lines: per launch, the update it started from (fairseq's
    "Loaded checkpoint ... @ U updates", 0 for "No existing checkpoint found", None if it says neither) and its
    records by tag, each with ELAPSED: seconds since the launch's first timestamped line. Text before the first
    start line (a log without them) is a launch too."""
    blocks: List[List[str]] = [[]]
    for line in text.splitlines():
        if LAUNCH_LINE.match(line):
            blocks.append([])
        else:
            blocks[-1].append(line)
    if not blocks[0]:
        blocks.pop(0)
    result = []
    for lines in blocks:
        start, first_time = None, None
        records: Dict[str, List[Dict]] = {}
        for line in lines:
            resumed = RESUMED_LINE.search(line)
            if start is None and (resumed or FRESH_LINE in line):
                start = int(resumed.group(1)) if resumed else 0
            stamp = LOG_TIME.match(line)
            when = datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S") if stamp else None
            if first_time is None:
                first_time = when
            for tag, found in read_json_log(line).items():
                for record in found:
                    record[ELAPSED] = (when - first_time).total_seconds() if when and first_time else None
                    records.setdefault(tag, []).append(record)
        result.append((start, records))
    return result


def log_order_problem(text: str) -> Optional[str]:
    """What is wrong with a train.log whose update numbers repeat or go back within one launch (or in a resumed
    launch, do not start after the update it resumed from), or None. One fairseq-train logs each tag's records
    at increasing updates; two trainings writing one folder at once leave their records interleaved, one after
    the other repeated: numbers no table can attribute to one run."""
    for number, (start, records) in enumerate(launches(text), 1):
        for tag, found in records.items():
            last, last_said = (start, f"the resume from update {start}") if start else (None, "")
            for record in found:
                update = record_updates(tag, record)
                if update is None:
                    continue
                if last is not None and update <= last:
                    return (f"update {int(update)} is logged after {last_said} (its {tag} records, launch {number} "
                            f"of the log): two trainings wrote this folder at once, or its log was edited; delete "
                            f"the folder and run it again")
                last, last_said = update, f"update {int(update)}"
    return None


def final_trajectory(text: str) -> Dict[str, List[Dict]]:
    """The records of train.log that lead to the run's last checkpoint: the last launch, and before it each
    earlier launch up to the update the next one resumed from, back to the launch that started from 0.
    A launch that logged nothing and never reached a checkpoint (it failed at start-up) is skipped.

    Each record's ELAPSED becomes the seconds since the run started, counting each earlier launch up to its
    last kept record. (fairseq's own "wall" meter does not survive a resume: it reads 0 for the whole launch
    after a mid-epoch resume, and restarts after one at an epoch boundary.)"""
    kept = []
    limit = math.inf
    for start, records in reversed(launches(text)):
        if start is None and not records:
            continue
        kept.append({tag: [r for r in rs if (record_updates(tag, r) or 0) <= limit] for tag, rs in records.items()})
        if not start:  # 0, or unknown with records: a log from before start lines, or a launch from scratch
            break
        limit = start
    merged: Dict[str, List[Dict]] = {}
    before = 0.0  # seconds spent in the earlier launches of the trajectory
    for records in reversed(kept):
        for tag, rs in records.items():
            merged.setdefault(tag, []).extend(
                {**r, ELAPSED: None if r[ELAPSED] is None else before + r[ELAPSED]} for r in rs)
        times = [r[ELAPSED] for rs in records.values() for r in rs if r[ELAPSED] is not None]
        before += max(times, default=0.0)
    return merged
