"""Tables of scripts/bench-versus, from the JSON reports of `statgate-bench versus`.

  versus_table.py header          the per-run table's header
  versus_table.py run REPORT      one run's line
  versus_table.py summary DIR     medians per target over DIR/*.json, side by side, with the
                                  ratios the targets of issue 18 use and whether each is met
"""

import glob
import json
import os
import statistics
import sys

# (column title, width, figure) of the per-run table.
COLUMNS = [
    ("target", 9, lambda f: f["target"]),
    ("p50 ms", 7, lambda f: f["commit_to_client"].get("p50_ms")),
    ("p99 ms", 7, lambda f: f["commit_to_client"].get("p99_ms")),
    ("max ms", 7, lambda f: f["commit_to_client"].get("max_ms")),
    ("undeliv", 7, lambda f: f["updates_undelivered"]),
    ("lost", 5, lambda f: f["lost_final_values"]),
    ("stmt/ins", 8, lambda f: f["statements_per_insert"]),
    ("cpu %", 6, lambda f: f["cpu"]["machine_busy_pct"]),
    ("server", 6, lambda f: f["cpu"]["server_cores"]),
    ("pg", 6, lambda f: f["cpu"]["postgres_cores"]),
    ("gen", 6, lambda f: f["cpu"]["generator_cores"]),
    ("others", 6, lambda f: f["cpu"].get("other_cores")),
    ("commit p50", 10, lambda f: f["writers_commit"].get("p50_ms")),
    ("commit p99", 10, lambda f: f["writers_commit"].get("p99_ms")),
    ("ins/s", 7, lambda f: f["achieved_inserts_per_sec"]),
    ("load1", 5, lambda f: f["load_average_1m_at_start"]),
]


def figures(path):
    with open(path) as file:
        return json.load(file)["figures"]


def cell(value, width):
    if isinstance(value, float):
        value = f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return f"{'-' if value is None else value!s:>{width}}"


def header():
    print("per run (latency: commit→client over every insert × subscriber; cores: server, "
          "PostgreSQL, load generator, everything else on the machine)")
    print(" ".join(f"{title:>{width}}" for title, width, _ in COLUMNS))


def run(path):
    f = figures(path)
    print(" ".join(cell(get(f), width) for _, width, get in COLUMNS), flush=True)


def number(value):
    return value if isinstance(value, (int, float)) else None


def median(reports, get):
    values = [number(get(f)) for f in reports]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summary(directory):
    reports = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        f = figures(path)
        reports.setdefault(f["target"], []).append(f)
    statgate, baseline = reports.get("statgate", []), reports.get("baseline", [])
    rows = [
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
    print(f"median of {len(statgate)} statgate and {len(baseline)} baseline runs")
    print(f"{'figure':<26} {'statgate':>9} {'baseline':>9} {'ratio':>7}  target (issue 18)")
    for title, get, bound in rows:
        s, b = median(statgate, get), median(baseline, get)
        ratio = s / b if s is not None and b else None
        target = ""
        if bound is not None and ratio is not None:
            met = "met" if ratio <= bound else "NOT met"
            target = f"ratio ≤ {bound:g}: {met}"
        print(f"{title:<26} {cell(s, 9)} {cell(b, 9)} {cell(ratio, 7)}  {target}")
    statements = median(statgate, lambda f: f["statements_per_insert"])
    if statements is not None:
        print(f"{'':<26} statgate ≤ 0.2 statements per insert: "
              f"{'met' if statements <= 0.2 else 'NOT met'}")
    undelivered = sum(f["updates_undelivered"] + f["lost_final_values"] for f in statgate)
    print(f"{'':<26} statgate delivers every update (all runs): "
          f"{'met' if statgate and undelivered == 0 else 'NOT met'}")
    short = [f for f in statgate + baseline
             if f["achieved_inserts_per_sec"] < 0.95 * f["target_inserts_per_sec"]]
    if short:
        print(f"warning: {len(short)} run(s) fell short of the insert rate "
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
