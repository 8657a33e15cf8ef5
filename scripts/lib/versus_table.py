"""Markdown tables of scripts/bench-versus, from the JSON reports of `statgate-bench versus`.

  versus_table.py header          the per-run table's header
  versus_table.py run REPORT      one run's row
  versus_table.py summary DIR     medians per target over DIR/*.json, side by side: each
                                  statgate target's ratio to the baseline, and whether the
                                  targets of issue 18 are met

Targets go by the report's label (statgate, statgate-one, baseline), which the script sets;
older reports without one by their target.
"""

import glob
import json
import os
import statistics
import sys

# (column title, figure) of the per-run table.
COLUMNS = [
    ("target", lambda f: label(f)),
    ("p50 ms", lambda f: f["commit_to_client"].get("p50_ms")),
    ("p99 ms", lambda f: f["commit_to_client"].get("p99_ms")),
    ("max ms", lambda f: f["commit_to_client"].get("max_ms")),
    ("undelivered", lambda f: f["updates_undelivered"]),
    ("lost", lambda f: f["lost_final_values"]),
    ("stmt/insert", lambda f: f["statements_per_insert"]),
    ("machine CPU %", lambda f: f["cpu"]["machine_busy_pct"]),
    ("server cores", lambda f: f["cpu"]["server_cores"]),
    ("pg cores", lambda f: f["cpu"]["postgres_cores"]),
    ("gen cores", lambda f: f["cpu"]["generator_cores"]),
    ("other cores", lambda f: f["cpu"].get("other_cores")),
    ("commit p50 ms", lambda f: f["writers_commit"].get("p50_ms")),
    ("commit p99 ms", lambda f: f["writers_commit"].get("p99_ms")),
    ("inserts/s", lambda f: f["achieved_inserts_per_sec"]),
    ("load1", lambda f: f["load_average_1m_at_start"]),
]

# (figure, how to read it, the bound on statgate/baseline that issue 18 sets, or None).
SUMMARY_ROWS = [
    ("commit→client p50 ms", lambda f: f["commit_to_client"].get("p50_ms"), None),
    ("commit→client p99 ms", lambda f: f["commit_to_client"].get("p99_ms"), 1.0),
    ("commit→client max ms", lambda f: f["commit_to_client"].get("max_ms"), None),
    ("writers' commit p50 ms", lambda f: f["writers_commit"].get("p50_ms"), None),
    ("writers' commit p99 ms", lambda f: f["writers_commit"].get("p99_ms"), 1.2),
    ("machine CPU busy %", lambda f: f["cpu"]["machine_busy_pct"], 1.0),
    ("server cores", lambda f: f["cpu"]["server_cores"], None),
    ("PostgreSQL cores", lambda f: f["cpu"]["postgres_cores"], None),
    ("load generator cores", lambda f: f["cpu"]["generator_cores"], None),
    ("other processes' cores", lambda f: f["cpu"].get("other_cores"), None),
    ("SQL statements per insert", lambda f: f["statements_per_insert"], None),
    ("updates undelivered", lambda f: f["updates_undelivered"], None),
    ("lost final values", lambda f: f["lost_final_values"], None),
    ("inserts/s achieved", lambda f: f["achieved_inserts_per_sec"], None),
    ("load average at start", lambda f: f["load_average_1m_at_start"], None),
]

# Rows whose ratio says nothing (counts that should be 0, the machine's state).
NO_RATIO = {"updates undelivered", "lost final values", "load average at start"}

ORDER = ["statgate", "statgate-one", "baseline"]


def figures(path):
    with open(path) as file:
        return json.load(file)["figures"]


def label(f):
    return f.get("label") or f["target"]


def text(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def row(cells):
    return "| " + " | ".join(cells) + " |"


def header():
    print("Per run (latency: commit→client over every insert × subscriber; cores: server, "
          "PostgreSQL, load generator, everything else on the machine):")
    print()
    print(row([title for title, _ in COLUMNS]))
    print(row(["---"] * len(COLUMNS)))


def run(path):
    f = figures(path)
    print(row([text(get(f)) for _, get in COLUMNS]), flush=True)


def number(value):
    return value if isinstance(value, (int, float)) else None


def values(reports, get):
    found = [number(get(f)) for f in reports]
    return [v for v in found if v is not None]


def median(reports, get):
    found = values(reports, get)
    return statistics.median(found) if found else None


def spread(reports, get):
    """The median, and the range when the runs differ: `7.33 (6.50–14.6)`."""
    found = values(reports, get)
    if not found:
        return "-"
    low, high = min(found), max(found)
    middle = text(statistics.median(found))
    return middle if low == high else f"{middle} ({text(low)}–{text(high)})"


def ratio_cell(s, b, bound):
    if s is None or not b:
        return "-"
    ratio = s / b
    if bound is None:
        return f"{ratio:.2f}×"
    # Three decimals near the bound, so that "1.20× NOT met: ≤ 1.2" cannot be read.
    shown = f"{ratio:.3f}" if abs(ratio - bound) < 0.01 else f"{ratio:.2f}"
    return f"{shown}× ({'met' if ratio <= bound else 'NOT met'}: ≤ {bound:g})"


def summary(directory):
    reports = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        f = figures(path)
        reports.setdefault(label(f), []).append(f)
    names = [n for n in ORDER if n in reports] + sorted(n for n in reports if n not in ORDER)
    baseline = reports.get("baseline", [])
    compared = [n for n in names if n != "baseline"] if baseline else []
    counts = ", ".join(f"{len(reports[n])} {n}" for n in names)
    print(f"Medians (range) of {counts} runs; ratios of medians to the baseline, with the bound "
          "issue 18 sets where it sets one:")
    print()
    print(row(["figure"] + names + [f"{n} / baseline" for n in compared]))
    print(row(["---"] * (1 + len(names) + len(compared))))
    for title, get, bound in SUMMARY_ROWS:
        cells = [spread(reports[n], get) for n in names]
        b = median(baseline, get)
        if title in NO_RATIO:
            cells += ["-"] * len(compared)
        else:
            cells += [ratio_cell(median(reports[n], get), b, bound) for n in compared]
        print(row([title] + cells))
    print()
    for n in compared:
        statements = median(reports[n], lambda f: f["statements_per_insert"])
        undelivered = sum(f["updates_undelivered"] + f["lost_final_values"] for f in reports[n])
        print(f"- {n}: ≤ 0.2 SQL statements per insert: "
              f"{'met' if statements is not None and statements <= 0.2 else 'NOT met'}; "
              f"every update delivered in every run: {'met' if undelivered == 0 else 'NOT met'}")
    everything = [f for n in names for f in reports[n]]
    short = [f for f in everything
             if f["achieved_inserts_per_sec"] < 0.95 * f["target_inserts_per_sec"]]
    if short:
        print(f"- warning: {len(short)} run(s) fell short of the insert rate "
              f"(the database could not take it): their figures are not comparable")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "header":
        header()
    elif command == "run" and len(sys.argv) == 3:
        run(sys.argv[2])
    elif command == "summary" and len(sys.argv) == 3:
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)
