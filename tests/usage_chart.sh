#!/usr/bin/env bash
# The demo's chart program (examples/usage_chart.py), without PostgreSQL: a fixed month
# fragment drawn as SVG and PNG, checked in the SVG's XML (one bar a day, the part over the
# limit stacked exactly on the limit line, title and limit in the text), and malformed CSV
# refused with status 1, a message naming the line, and no picture written.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=examples/usage_chart.py
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Five days, out of order; the 3rd and the 5th are over the limit of 100.
cat >"$out/usage.csv" <<'CSV'
day,used,allowance
2026-03-02,80,100
2026-03-01,40,100
2026-03-03,130,100
2026-03-04,100,100
2026-03-05,175,100
CSV

"$chart" "$out/usage.csv" --output "$out/usage.svg" --title "Test tokens per day" --ylabel tokens
/usr/bin/python3 - "$out/usage.svg" <<'PY'
import re
import sys
import xml.etree.ElementTree as ElementTree

SVG = "{http://www.w3.org/2000/svg}"
root = ElementTree.parse(sys.argv[1]).getroot()  # raises on malformed XML
assert root.tag == SVG + "svg", root.tag

groups = {group.get("id"): group for group in root.iter(SVG + "g") if group.get("id")}
used_days = sorted(name[len("used-"):] for name in groups if name.startswith("used-"))
over_days = sorted(name[len("over-"):] for name in groups if name.startswith("over-"))
assert used_days == ["2026-03-0%d" % day for day in range(1, 6)], used_days
assert over_days == ["2026-03-03", "2026-03-05"], over_days

def ys(group):
    """The y coordinates of a group's path (SVG's y grows downwards)."""
    return [float(y) for y in re.findall(r"[ML] [-\d.]+ ([-\d.]+)", group.find(SVG + "path").get("d"))]

limit_y = set(ys(groups["limit"]))
assert len(limit_y) == 1, f"a constant limit is one horizontal line, got y = {limit_y}"
limit_y = limit_y.pop()
# A day over the limit: its bar within the limit ends at the line and the overage starts there.
for day in over_days:
    assert abs(min(ys(groups["used-" + day])) - limit_y) < 0.01, day
    assert abs(max(ys(groups["over-" + day])) - limit_y) < 0.01, day
# A day under it stays below the line; the 4th, exactly at the limit, touches it.
assert min(ys(groups["used-2026-03-01"])) > limit_y
assert abs(min(ys(groups["used-2026-03-04"])) - limit_y) < 0.01
# The 5th's overage (75) is 2.5 times the 3rd's (30).
heights = {day: max(ys(groups["over-" + day])) - min(ys(groups["over-" + day])) for day in over_days}
assert abs(heights["2026-03-05"] / heights["2026-03-03"] - 2.5) < 0.01, heights

texts = [text.text for text in root.iter(SVG + "text")]
for expected in ["Test tokens per day", "tokens", "day", "limit: 100 a day", "over the limit (overage)"]:
    assert expected in texts, f"{expected!r} not in {texts}"
PY

# The same from standard input, as PNG.
"$chart" --output "$out/usage.png" <"$out/usage.csv"
[ "$(head -c 8 "$out/usage.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] \
  || { echo "usage_chart: $out/usage.png is not a PNG" >&2; exit 1; }

# Malformed input: status 1, the expected message, no picture.
refuses() {
  local expected=$1 input=$2 status=0
  rm -f "$out/bad.svg"
  printf '%b' "$input" | "$chart" --output "$out/bad.svg" 2>"$out/stderr" || status=$?
  if [ "$status" -ne 1 ] || ! grep -qF -- "$expected" "$out/stderr" || [ -e "$out/bad.svg" ]; then
    echo "usage_chart: for input '$input' expected status 1, \"$expected\", no picture;" \
         "got status $status, stderr: $(cat "$out/stderr")" >&2
    exit 1
  fi
}
refuses "<stdin>: no data: expected a header day,used,allowance" ''
refuses "no data: the header has no rows of days under it" 'day,used,allowance\n'
refuses "line 1: expected the header day,used,allowance, got day,tokens" 'day,tokens\n2026-03-01,4\n'
refuses "line 3: used must be a whole number, got 'lots'" 'day,used,allowance\n2026-03-01,4,10\n2026-03-02,lots,10\n'
refuses "line 2: allowance must be a whole number, got ''" 'day,used,allowance\n2026-03-01,4,\n'
refuses "line 2: used must not be negative, got -4" 'day,used,allowance\n2026-03-01,-4,10\n'
refuses "line 2: day must be a date (YYYY-MM-DD), got '03/01/2026'" 'day,used,allowance\n03/01/2026,4,10\n'
refuses "line 3: day 2026-03-01 appears twice" 'day,used,allowance\n2026-03-01,4,10\n2026-03-01,5,10\n'
refuses "line 2: expected 3 values (day,used,allowance), got 2" 'day,used,allowance\n2026-03-01,4\n'

echo "usage_chart: SVG and PNG drawn and checked, 9 malformed inputs refused"
