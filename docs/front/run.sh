#!/usr/bin/env bash
# The front study of docs/front.md, resumable: rerun it and it continues where it stopped.
#
#   docs/front/run.sh            # from the checkout, with .venv built (make setup)
#
# 1. Every learned graph of the capacity study at C = 4 (docs/capacity/sweep-c4, CFashionMNIST and
#    CMNIST, seeds 0-4) retrained at its τ*, with 2 random controls and a width control, each in its
#    own directory beside the run (RUN/retrain-<τ*>, RUN/retrain-<τ*>-random<k>, RUN/retrain-<τ*>-width).
# 2. The λ front on CFashionMNIST: the same design at λ ∈ {0, 2e-2, 5e-2}, seeds 0-2
#    (docs/front/lam; λ = 5e-3 is the capacity study), with the same retrainings and controls.
# 3. `dagwire front` over both (CFashionMNIST and CMNIST: the capacity sweep also holds CFashionMNIST_T8).
#
# Seed-major (seed 0 of every family, then seed 1, ...), so that a machine that stops part-way has
# run every family and dataset alike. One thread a process, JOBS processes (default 2; JOBS=1 leaves
# a core to other work). Run one copy of the script at a time: two would train the same retraining at once.
set -euo pipefail
cd "$(dirname "$0")/../.."
DAGWIRE=${DAGWIRE:-.venv/bin/dagwire}
PYTHON=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
C4=docs/capacity/sweep-c4
LAM=docs/front/lam

# A run's retraining at τ* (skipped when finished, continued when interrupted), then its controls
# (`--control` continues or reuses each by itself).
retrain_with_controls() {
  local run=$1 out
  out=$("$PYTHON" -c 'import sys; from dagwire.prune import retrain_dir; from dagwire.taustar import run_tau_star
print(retrain_dir(sys.argv[1], run_tau_star(sys.argv[1]), False))' "$run")
  if [ -f "$out/graph.json" ]; then :
  elif [ -d "$out" ]; then "$DAGWIRE" retrain "$run" --threshold star --quiet --resume --out "$out"
  else "$DAGWIRE" retrain "$run" --threshold star --quiet
  fi
  "$DAGWIRE" retrain "$run" --threshold star --control random --controls 2 --control width --quiet
}

JOBS=${JOBS:-2}
# The λ front's own runs first (a sweep resumes by itself), seed-major inside it, JOBS at a time.
"$DAGWIRE" sweep --preset capacity --channels 4 --datasets cfashionmnist --seeds 0-2 --lam 0,2e-2,5e-2 --out "$LAM" \
  --runs-at-once "$JOBS" --quiet

# Every run to retrain, seed-major; JOBS workers (default 2, one a core) take every JOBS-th of them.
runs=()
for seed in 0 1 2 3 4; do
  for dataset in cfashionmnist cmnist; do runs+=("$C4/runs/$dataset/seed$seed"); done
  if [ "$seed" -le 2 ]; then
    for lam in lam0 lam0.02 lam0.05; do runs+=("$LAM/runs/cfashionmnist/$lam/seed$seed"); done
  fi
done
workers=()
for ((worker = 0; worker < JOBS; worker++)); do
  (for ((k = worker; k < ${#runs[@]}; k += JOBS)); do retrain_with_controls "${runs[k]}"; done) &
  workers+=($!)
done
for pid in "${workers[@]}"; do wait "$pid"; done  # a failed worker fails the script (set -e)

"$DAGWIRE" front "$C4" "$LAM" --datasets cfashionmnist,cmnist --json --plot docs/img/front.png > docs/front/front.json
echo "wrote docs/front/front.json and docs/img/front.png"
