# Shared by the benchmark scripts (sourced). Expects PGHOST, PGPORT and PGUSER, and for
# run_pgbench the variables clients, threads and seconds.

psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

# A checkpoint inside a run would slow that run alone, by the full-page image each page
# written after it puts into the WAL: benchmark clusters request none while a benchmark runs
# (scripts/cluster.sh), and a script takes one before its first run, once the tables are set
# up. Forcing one before every run instead would charge every 4-second run the full-page
# images of every page it touches, which a server with checkpoints minutes apart spreads
# over minutes of traffic.
#   checkpoint DATABASE
checkpoint() { psql -d "$1" -c CHECKPOINT; }

# One pgbench run, -M prepared; prints its tps.
#   run_pgbench DATABASE SCRIPT SYNCHRONOUS_COMMIT [LOG_PREFIX]
run_pgbench() {
  local tps
  tps=$(PGOPTIONS="${PGOPTIONS:-} -c synchronous_commit=$3" command pgbench -n -M prepared \
          -c "$clients" -j "$threads" -T "$seconds" ${4:+-l --log-prefix="$4"} -f "$2" "$1" 2>&1 \
        | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
  [ -n "$tps" ] || { echo "bench: pgbench failed: $2 on $1" >&2; return 1; }
  echo "$tps"
}

# Runs NAME=FILE scripts in turns, run by run, so that none is measured on tables that only
# the others grew; prints "NAME median_tps run1_tps run2_tps ..." per script, in the given
# order (the runs in the order of the rounds, so that two scripts' runs of one round pair
# up: paired_ratios). With a LOG_DIR, pgbench's per-transaction logs go to LOG_DIR/NAME-RUN.*.
#   alternate DATABASE SYNCHRONOUS_COMMIT RUNS LOG_DIR|"" NAME=FILE...
alternate() {
  local db=$1 sync=$2 count=$3 logs=$4 pair name run
  shift 4
  declare -A all=()
  for run in $(seq "$count"); do
    for pair in "$@"; do
      name=${pair%%=*}
      all[$name]+="$(run_pgbench "$db" "${pair#*=}" "$sync" ${logs:+"$logs/$name-$run"}) "
    done
  done
  for pair in "$@"; do
    read -ra tps <<<"${all[${pair%%=*}]}"
    echo "${pair%%=*} $(median "${tps[@]}") ${tps[*]}"
  done
}

# The spread of a ratio between two scripts run in turns: the lowest and the highest of the
# ratios of their runs round by round (the two runs of a round ran one after the other, on
# the same tables), as "min-max".
#   paired_ratios "A_RUN1 A_RUN2 ..." "B_RUN1 B_RUN2 ..."
paired_ratios() {
  local -a a b
  local i
  read -ra a <<<"$1"; read -ra b <<<"$2"
  [ "${#a[@]}" -eq "${#b[@]}" ] || { echo "paired_ratios: ${#a[@]} runs against ${#b[@]}" >&2; return 1; }
  for i in "${!a[@]}"; do ratio "${a[$i]}" "${b[$i]}"; echo; done \
    | sort -g | awk 'NR == 1 {low = $1} {high = $1} END {printf "%s-%s", low, high}'
}
