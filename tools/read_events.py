#!/usr/bin/env python3
"""Reads a run directory's TensorBoard event files the way TensorBoard does, with the
`tensorboard` package's EventAccumulator (tools/requirements-test.txt pins it), and prints
JSON: {"files": [event file names], "scalars": {tag: [[step, value, wall_time], ...]}}.

    python3 tools/read_events.py runs/x

Tests/LoraDistTests/CLI/TensorBoardCLITests.swift compares every scalar with metrics.jsonl.
"""
import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: read_events.py RUN_DIR")
    run = sys.argv[1]
    # size_guidance 0: keep every scalar (the default samples down to 10,000 per tag).
    acc = event_accumulator.EventAccumulator(run, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    scalars = {tag: [[e.step, e.value, e.wall_time] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    files = sorted(f for f in os.listdir(run) if "tfevents" in f)
    print(json.dumps({"files": files, "scalars": scalars}))


if __name__ == "__main__":
    main()
