#!/usr/bin/env bash
# The main job: raw logs -> ELWC TFRecords -> SEQ+MD training -> evaluation -> SavedModel.
# Called by `make demo` (real trivago data) and `make demo-synthetic`; variables:
#   PY       Python of the pinned environment (default .venv/bin/python)
#   SOURCE   trivago (default) or synthetic
#   DATA_DIR folder holding trivago-recsys2019/ (default ../shared/data)
#   RUN_DIR  output folder (default runs/demo)
#   EPOCHS   training passes (default 6)
set -euo pipefail

PY="${PY:-.venv/bin/python}"
SOURCE="${SOURCE:-trivago}"
DATA_DIR="${DATA_DIR:-../shared/data}"
RUN_DIR="${RUN_DIR:-runs/demo}"
EPOCHS="${EPOCHS:-6}"
start=$(date +%s)
# Hide TensorFlow's C++ start-up notices (CUDA probing on a CPU machine); errors still show.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

step() { echo; echo "== [$(( $(date +%s) - start ))s] $*"; }

if [[ "$SOURCE" == "trivago" ]]; then
  spec=configs/trivago.json
  if [[ -f "$RUN_DIR/data/stats.json" ]]; then
    step "ELWC TFRecords already in $RUN_DIR/data (delete it to convert again)"
  else
    shopt -s nullglob
    inputs=("$DATA_DIR"/trivago-recsys2019/*.parquet)
    shopt -u nullglob
    if [[ ${#inputs[@]} -eq 0 ]]; then
      echo "error: no trivago parquet file found in $DATA_DIR/trivago-recsys2019/ (DATA_DIR=$DATA_DIR)." >&2
      echo "  Point DATA_DIR at the folder that contains trivago-recsys2019/, e.g. make demo DATA_DIR=/data/seqmd," >&2
      echo "  or run on generated data instead: make demo-synthetic" >&2
      exit 2
    fi
    step "converting ${inputs[0]} to ELWC TFRecords in $RUN_DIR/data"
    "$PY" -m pipelines.trivago --input "${inputs[0]}" --output_dir "$RUN_DIR/data"
  fi
elif [[ "$SOURCE" == "synthetic" ]]; then
  spec=configs/synthetic.json
  if [[ -f "$RUN_DIR/data/stats.json" ]]; then
    step "ELWC TFRecords already in $RUN_DIR/data"
  else
    step "generating synthetic ELWC TFRecords in $RUN_DIR/data"
    "$PY" -m pipelines.synthetic --output_dir "$RUN_DIR/data" --num_lists 20000 --num_regions 8 \
      --setting differ --seed 7
  fi
else
  echo "error: SOURCE must be trivago or synthetic, got '$SOURCE'" >&2
  exit 2
fi

step "training SEQ+MD for $EPOCHS epochs (checkpoints and TensorBoard logs in $RUN_DIR/model)"
"$PY" -m seqmd_tf.train --feature_spec "$spec" \
  --train_files "$RUN_DIR/data/train/*.tfrecord" --eval_files "$RUN_DIR/data/eval/*.tfrecord" \
  --model_dir "$RUN_DIR/model" --export_dir "$RUN_DIR/export" --epochs "$EPOCHS" \
  --model seq_md --region_mask element --nofinal_evaluation

version=$(ls "$RUN_DIR/export" | grep -E '^[0-9]+$' | sort -n | tail -1)
saved_model="$RUN_DIR/export/$version"

step "evaluating the SavedModel through its serving signature"
"$PY" -m seqmd_tf.evaluate --saved_model "$saved_model" --feature_spec "$spec" \
  --eval_files "$RUN_DIR/data/eval/*.tfrecord" --output_json "$RUN_DIR/eval.json" \
  --min_region_lists 30

step "done"
cat <<EOT
  TFRecords and stats:  $RUN_DIR/data (stats.json)
  metrics:              $RUN_DIR/eval.json and $RUN_DIR/eval.md
  TensorBoard logs:     $RUN_DIR/model/logs   (tensorboard --logdir $RUN_DIR/model/logs)
  checkpoints:          $RUN_DIR/model/backup
  SavedModel:           $saved_model
                        (saved_model_cli show --dir $saved_model --all)
EOT
