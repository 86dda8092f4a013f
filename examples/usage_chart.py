#!/usr/bin/python3
"""Draws a subject's daily usage against its limit: one bar a day, the part above the limit
in another colour, the limit as a line.

    usage_chart.py [CSV] --output usage.svg [--title TITLE] [--ylabel LABEL]

The CSV (a file, or standard input when none is given) has a header and one row per day:
day (YYYY-MM-DD), used and allowance (the day's limit), all whole numbers but the day.
The output's extension chooses the format (.svg, .png, ...). Malformed input exits with
status 1 and a message naming the line.

Debian's python3-matplotlib serves /usr/bin/python3, hence the interpreter named above.
"""

import argparse
import csv
import datetime
import sys

import matplotlib
import matplotlib.dates as mdates
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

COLUMNS = ["day", "used", "allowance"]
WITHIN_COLOUR = "#4c78a8"
OVER_COLOUR = "#e45756"
LIMIT_COLOUR = "#222222"

# Text stays text in the SVG (smaller, searchable), and its element ids stay the same from
# one run to the next.
matplotlib.rcParams["svg.fonttype"] = "none"
matplotlib.rcParams["svg.hashsalt"] = "pg_quota"


class InputError(Exception):
    pass


def whole_number(text, column, line):
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"line {line}: {column} must be a whole number, got {text!r}") from None
    if value < 0:
        raise InputError(f"line {line}: {column} must not be negative, got {value}")
    return value


def read_days(stream):
    """[(day, used, allowance)] sorted by day, validated."""
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        raise InputError(f"no data: expected a header {','.join(COLUMNS)} and one row per day")
    if [name.strip() for name in header] != COLUMNS:
        raise InputError(f"line 1: expected the header {','.join(COLUMNS)}, got {','.join(header)}")
    days = []
    seen = set()
    for row in reader:
        line = reader.line_num
        if len(row) != len(COLUMNS):
            raise InputError(f"line {line}: expected {len(COLUMNS)} values ({','.join(COLUMNS)}), got {len(row)}")
        day_text, used_text, allowance_text = (value.strip() for value in row)
        try:
            day = datetime.date.fromisoformat(day_text)
        except ValueError:
            raise InputError(f"line {line}: day must be a date (YYYY-MM-DD), got {day_text!r}") from None
        if day in seen:
            raise InputError(f"line {line}: day {day} appears twice")
        seen.add(day)
        days.append((day, whole_number(used_text, "used", line), whole_number(allowance_text, "allowance", line)))
    if not days:
        raise InputError("no data: the header has no rows of days under it")
    return sorted(days)


def thousands(value, _position):
    return f"{value:,.0f}"


def draw(days, title, ylabel, output):
    dates = [day for day, _, _ in days]
    within = [min(used, allowance) for _, used, allowance in days]
    allowances = [allowance for _, _, allowance in days]
    over_days = [(day, allowance, used - allowance) for day, used, allowance in days if used > allowance]

    figure = Figure(figsize=(10, 4.8), layout="constrained")
    axes = figure.add_subplot()
    within_bars = axes.bar(dates, within, width=0.8, color=WITHIN_COLOUR, label="within the limit")
    # Ids in the SVG name each bar's day, so that a reader (or a test) can find them.
    for day, bar in zip(dates, within_bars):
        bar.set_gid(f"used-{day}")
    if over_days:
        over_bars = axes.bar([day for day, _, _ in over_days], [over for _, _, over in over_days], width=0.8,
                             bottom=[allowance for _, allowance, _ in over_days], color=OVER_COLOUR,
                             label="over the limit (overage)")
        for (day, _, _), bar in zip(over_days, over_bars):
            bar.set_gid(f"over-{day}")

    # The limit as steps spanning each day's bar, so that a change of plan shows where it happened.
    half_day = datetime.timedelta(hours=12)
    edges = [mdates.date2num(datetime.datetime.combine(day, datetime.time()) - half_day) for day in dates]
    edges.append(edges[-1] + 1)
    limit_label = f"limit: {allowances[0]:,} a day" if len(set(allowances)) == 1 else "limit"
    limit_line = axes.stairs(allowances, edges, baseline=None, color=LIMIT_COLOUR, linewidth=1.5,
                             linestyle="--", label=limit_label)
    limit_line.set_gid("limit")

    axes.set_xlim(edges[0], edges[-1])
    axes.set_title(title)
    axes.set_xlabel("day")
    axes.set_ylabel(ylabel)
    # Whole days only (an automatic locator ticks hours when there are few days), about 8 ticks.
    span_days = (dates[-1] - dates[0]).days
    axes.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, round(span_days / 8))))
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes.xaxis.get_major_locator()))
    axes.yaxis.set_major_formatter(FuncFormatter(thousands))
    # Room above the highest bar or the limit for the legend (and some height when all is 0).
    axes.set_ylim(0, max(max(used for _, used, _ in days), max(allowances), 1) * 1.12)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(loc="upper left", frameon=False, ncols=3)
    # No creation date in the file, so that the same data gives the same bytes.
    figure.savefig(output, metadata={"Date": None})


def main():
    parser = argparse.ArgumentParser(description="Daily usage against its limit, as a chart.")
    parser.add_argument("csv", nargs="?", type=argparse.FileType("r"), default=sys.stdin,
                        help="day,used,allowance rows (default: standard input)")
    parser.add_argument("--output", "-o", required=True, help="the picture to write: .svg or .png")
    parser.add_argument("--title", default="Daily usage against the limit")
    parser.add_argument("--ylabel", default="used per day")
    arguments = parser.parse_args()
    try:
        days = read_days(arguments.csv)
    except InputError as error:
        print(f"usage_chart: {arguments.csv.name}: {error}", file=sys.stderr)
        return 1
    draw(days, arguments.title, arguments.ylabel, arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
