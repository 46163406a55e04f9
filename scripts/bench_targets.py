"""What the benchmarks' ratio lines mean: the issues' targets, and a reader for a run's output.

Shared by scripts/bench-chart and scripts/bench-table, so each target is written once.
"""
import re

# name: (bound, "min" or "max"). Issue 12's, issue 30's CPU per request, and issue 26's TLS.
TARGETS = {
    "project/njs": (1.5, "min"),
    "project/fastapi": (6, "min"),
    "verifier/fastapi direct": (15, "min"),
    "cached/none": (0.8, "min"),
    "orders-stack/seed": (10, "min"),
    "orders-direct/seed": (15, "min"),
    "catalog-stack/seed": (40, "min"),
    "check-1m-revoked/none": (0.9, "min"),
    "api-p99-flood/idle": (2, "max"),
    "cpu-per-order seed/stack": (10, "min"),
    "cpu-per-check fastapi/verifier": (20, "min"),
    "edge-tls/plain": (0.85, "min"),
    "mtls/plain": (0.8, "min"),
}

# `ratio NAME MEDIAN (MIN-MAX)` (NAME may end in " direct") and `cpu-ratio NAME A/B MEDIAN (MIN-MAX)`.
RATIO = re.compile(r"ratio (\S+(?: direct)?) ([0-9.]+)(?: \(([0-9.]+)-([0-9.]+)\))?\s*$")
CPU_RATIO = re.compile(r"cpu-ratio (\S+) (\S+) ([0-9.]+)(?: \(([0-9.]+)-([0-9.]+)\))?\s*$")
# The cpu-ratio lines' names as the targets call them.
CPU_NAMES = {"cpu-per-order": "cpu-per-order seed/stack", "cpu-per-check": "cpu-per-check fastapi/verifier"}


def read_ratios(lines):
    """name -> (median, "median (min-max)" as printed), in the order first seen; a later line of
    the same name replaces the earlier."""
    out = {}
    for line in lines:
        line = line.strip()
        m = CPU_RATIO.match(line)
        if m:
            name, (median, low, high) = CPU_NAMES.get(m.group(1), f"{m.group(1)} {m.group(2)}"), m.groups()[2:]
        else:
            m = RATIO.match(line)
            if not m:
                continue
            name, (median, low, high) = m.group(1), m.groups()[1:]
        out[name] = (float(median), median + (f" ({low}-{high})" if low else ""))
    return out


def met(name, value):
    bound, kind = TARGETS[name]
    return value >= bound if kind == "min" else value <= bound
