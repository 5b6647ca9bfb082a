#!/usr/bin/env bash
# Prepare a TIPC run, offline: nothing is downloaded.
#
#   bash test_tipc/prepare.sh CONFIG MODE
#
# every mode:                    the embedded sample data (python -m rsport.data.samples; idempotent),
#                                then the mode's inference input into the folder of config line 11
#                                (line 47 for whole_infer): the sample val scenes for
#                                lite_train_lite_infer, the whole-size scene otherwise (test_tipc/scenes.py;
#                                the folder's .mode file names the mode)
# whole_infer:                   the converted reference weights named on the config's infer_model line
#                                (python convert/torch2paddle.py MODEL --dst ...), kept when present
#
# Run it before each run of another mode: PaddleSeg's runner reads the input folder as it finds it
# (ours refuses a folder prepared for another mode).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=test_tipc/tipc_lib.sh
source "$ROOT/test_tipc/tipc_lib.sh"

tipc_start prepare.sh "$@"

model_name=$(tipc_value "${TIPC_LINES[1]}")
python=$(tipc_value "${TIPC_LINES[2]}")
infer_models=$(tipc_value "${TIPC_LINES[36]}")
if [[ "$MODE" == whole_infer ]]; then
    images=$(tipc_value "${TIPC_LINES[47]}")
else
    images=$(tipc_value "${TIPC_LINES[11]}")
fi

printf 'prepare %s %s\n' "$model_name" "$MODE"
"$python" -m rsport.data.samples

"$python" test_tipc/scenes.py --model "$model_name" --mode "$MODE" --infer-dir "$images"

if [[ "$MODE" == whole_infer ]]; then
    IFS='|' read -r -a weights <<< "$infer_models"
    for w in "${weights[@]}"; do
        if [[ "$w" == null || "$w" != *.pdparams ]]; then
            continue  # an already exported model folder: nothing to convert
        elif [[ -f "$w" && -f "$w.manifest.json" ]]; then
            printf 'kept %s (delete it to convert again)\n' "$w"
        else
            "$python" convert/torch2paddle.py "$model_name" --dst "$w"
        fi
    done
fi
printf 'prepared %s %s\n' "$model_name" "$MODE"
