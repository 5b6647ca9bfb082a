#!/usr/bin/env bash
# TIPC: train briefly, evaluate, export, then infer in every configured combination, offline,
# with numeric gates; each command's status goes to results_python.log in the standard form.
#
#   bash test_tipc/prepare.sh CONFIG MODE                      # data (and weights) first
#   bash test_tipc/test_train_inference_python.sh CONFIG MODE  # then this
#
# CONFIG: test_tipc/configs/<model>/train_infer_python.txt (line map: python test_tipc/configs.py --layout)
# MODE:   lite_train_lite_infer | lite_train_whole_infer | whole_infer (test_tipc/README.md)
# Environment: TIPC_OUTPUT (default test_tipc/output) is where logs go, as <model>/<mode>/;
#   TIPC_DRY_RUN=1 prints the commands instead of running them; TIPC_GPU_COUNT overrides the
#   detected number of CUDA devices (GPU entries of the config need that many).
# Exit status: 0 only when every command and gate succeeded; 1 otherwise; 2 on bad arguments.
#
# It builds each command from the config as PaddleSeg's own runner does (the same configs run under
# both; test_tipc/README.md): `key=value` flags, `null` keys or values left out, per-mode values on
# lines 6 and 8 only, the model flag of line 46 given the export's deploy.yaml. It adds the gates,
# skips entries this machine cannot run (listed in skipped.log) and keeps each trained model in
# its own folder: <entry>/train (weights), <entry>/export (the exported model).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=test_tipc/tipc_lib.sh
source "$ROOT/test_tipc/tipc_lib.sh"

tipc_start test_train_inference_python.sh "$@"

L=("${TIPC_LINES[@]}")
# ---- train_params (lines 1..20)
model_name=$(tipc_value "${L[1]}")
python=$(tipc_value "${L[2]}")
tipc_split "$(tipc_value "${L[3]}")" gpu_list
train_device_key=$(tipc_key "${L[4]}")
tipc_split "$(tipc_value "${L[4]}")" train_devices
autocast_key=$(tipc_key "${L[5]}")
tipc_split "$(tipc_value "${L[5]}")" autocast_list
iters_key=$(tipc_key "${L[6]}")
iters=$(tipc_for_mode "$(tipc_value "${L[6]}")" "$MODE")
save_key=$(tipc_key "${L[7]}")
batch_key=$(tipc_key "${L[8]}")
batch=$(tipc_for_mode "$(tipc_value "${L[8]}")" "$MODE")
pretrain_key=$(tipc_key "${L[9]}")
pretrain=$(tipc_value "${L[9]}")
train_model_name=$(tipc_value "${L[10]}")
train_infer_img=$(tipc_value "${L[11]}")
train_param1_key=$(tipc_key "${L[12]}")
train_param1=$(tipc_value "${L[12]}")
tipc_split "$(tipc_value "${L[14]}")" trainer_list
declare -A train_cmd=() export_cmd=()
for i in 15 16 17 18 19 20; do
    train_cmd[$(tipc_key "${L[$i]}")]=$(tipc_value "${L[$i]}")
done
# ---- eval_params (lines 23..24)
eval_py=$(tipc_value "${L[23]}")
eval_out_key=$(tipc_key "${L[24]}")
# ---- export_params (lines 27..35); trainer i exports with line 29+i (norm, pact, fpgm, distill, export1, export2)
export_save_key=$(tipc_key "${L[27]}")
export_weights_key=$(tipc_key "${L[28]}")
trainer_keys=(norm_train pact_train fpgm_train distill_train "$(tipc_key "${L[19]}")" "$(tipc_key "${L[20]}")")
for i in 0 1 2 3 4 5; do
    export_cmd[${trainer_keys[$i]}]=$(tipc_value "${L[$((29 + i))]}")
done
inference_dir=$(tipc_value "${L[35]}")
# ---- infer_params (lines 36..51)
tipc_split "$(tipc_value "${L[36]}")" infer_models
tipc_split "$(tipc_value "${L[37]}")" infer_exports
inference_py=$(tipc_value "${L[39]}")
infer_device_key=$(tipc_key "${L[40]}")
tipc_split "$(tipc_value "${L[40]}")" infer_devices
mkldnn_key=$(tipc_key "${L[41]}")
tipc_split "$(tipc_value "${L[41]}")" mkldnn_list
threads_key=$(tipc_key "${L[42]}")
tipc_split "$(tipc_value "${L[42]}")" threads_list
infer_batch_key=$(tipc_key "${L[43]}")
tipc_split "$(tipc_value "${L[43]}")" infer_batch_list
trt_key=$(tipc_key "${L[44]}")
tipc_split "$(tipc_value "${L[44]}")" trt_list
precision_key=$(tipc_key "${L[45]}")
tipc_split "$(tipc_value "${L[45]}")" precision_list
model_dir_key=$(tipc_key "${L[46]}")
image_key=$(tipc_key "${L[47]}")
infer_img=$(tipc_value "${L[47]}")
save_log_key=$(tipc_key "${L[48]}")
save_log_value=$(tipc_value "${L[48]}")
benchmark_key=$(tipc_key "${L[49]}")
benchmark_value=$(tipc_value "${L[49]}")
infer_out_key=$(tipc_key "${L[50]}")
infer_param2_key=$(tipc_key "${L[51]}")
infer_param2=$(tipc_value "${L[51]}")

if [[ ! "$model_name" =~ ^[A-Za-z0-9_.-]+$ ]]; then
    printf 'error: %s: line 2 model_name %q is not a model name\n' "$CONFIG" "$model_name" >&2
    exit 2
fi

if [[ "${TIPC_DRY_RUN:-0}" != 1 ]]; then
    if [[ "$MODE" == whole_infer ]]; then
        tipc_check_input "$infer_img" "$MODE"
    else
        tipc_check_input "$train_infer_img" "$MODE"
    fi
fi

OUTPUT_ROOT=${TIPC_OUTPUT:-test_tipc/output}
LOG_PATH="$OUTPUT_ROOT/$model_name/$MODE"
status_log="$LOG_PATH/results_python.log"
skip_log="$LOG_PATH/skipped.log"
if [[ "${TIPC_DRY_RUN:-0}" != 1 ]]; then
    rm -rf -- "$LOG_PATH"
    mkdir -p -- "$LOG_PATH"
    : > "$status_log"
fi

# skipped WHAT: note a configured entry this machine cannot run (never a failure, never a status line).
skipped() {
    printf 'skipped: %s\n' "$1"
    [[ "${TIPC_DRY_RUN:-0}" == 1 ]] || printf '%s\n' "$1" >> "$skip_log"
}

GPU_COUNT=""
# gpus_available N: success when at least N CUDA devices can be used.
gpus_available() {
    if [[ -z "$GPU_COUNT" ]]; then
        GPU_COUNT=${TIPC_GPU_COUNT:-$("$python" -c 'import paddle
print(paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0)' 2>/dev/null || echo 0)}
    fi
    (( GPU_COUNT >= $1 ))
}

# run_inference MODEL_DIR IMAGES WEIGHTS DIR: every configured inference combination (logs and
# results in DIR), then the parity gate: the exported model against the dygraph model with
# WEIGHTS on the same scenes, and every combination's output against the dygraph prediction.
run_inference() {
    local model_dir=$1 images=$2 weights=$3 dir=$4
    local device mkldnn threads bs precision trt tag log
    local -a cmd results=()
    for device in "${infer_devices[@]}"; do
        if [[ "$device" == gpu && ( "$infer_device_key" == null || -z "$infer_device_key" ) ]]; then
            skipped "inference on gpu (line 41 of the config names no device flag for $inference_py)"
            continue
        elif [[ "$device" == gpu ]] && ! gpus_available 1; then
            skipped "inference on gpu (no CUDA device)"
            continue
        elif [[ "$device" != cpu && "$device" != gpu ]]; then
            skipped "inference on device $device (only cpu and gpu are known)"
            continue
        fi
        for mkldnn in "${mkldnn_list[@]}"; do
            [[ "$device" == gpu ]] && mkldnn=null
            for threads in "${threads_list[@]}"; do
                [[ "$device" == gpu ]] && threads=null
                for trt in "${trt_list[@]}"; do
                    [[ "$device" == cpu ]] && trt=null
                    for precision in "${precision_list[@]}"; do
                        if [[ "$precision" != fp32 ]]; then
                            skipped "inference precision $precision (this port is certified in fp32)"
                            continue
                        fi
                        for bs in "${infer_batch_list[@]}"; do
                            if [[ "$device" == cpu ]]; then
                                tag="python_infer_cpu_usemkldnn_${mkldnn}_threads_${threads}_precision_${precision}_batchsize_${bs}"
                            else
                                tag="python_infer_gpu_usetrt_${trt}_precision_${precision}_batchsize_${bs}"
                            fi
                            log="$dir/${tag}.log"
                            cmd=("$python")
                            tipc_words "$inference_py" cmd
                            tipc_add cmd "$infer_device_key" "$device"
                            tipc_add cmd "$mkldnn_key" "$mkldnn"
                            tipc_add cmd "$threads_key" "$threads"
                            tipc_add cmd "$trt_key" "$trt"
                            tipc_add cmd "$precision_key" "$precision"
                            tipc_add cmd "$infer_batch_key" "$bs"
                            tipc_add cmd "$model_dir_key" "$model_dir/deploy.yaml"
                            tipc_add cmd "$image_key" "$images"
                            tipc_add cmd "$save_log_key" "$save_log_value"
                            tipc_add cmd "$benchmark_key" "$benchmark_value"
                            tipc_add cmd "$infer_out_key" "$dir/${tag}_results"
                            tipc_add cmd "$infer_param2_key" "$infer_param2"
                            tipc_run "$log" "$model_name" "$status_log" -- "${cmd[@]}"
                            results+=("$dir/${tag}_results")
                        done
                    done
                done
            done
        done
    done
    if [[ "$weights" != null ]]; then
        cmd=("$python" test_tipc/gates.py parity --model-dir "$model_dir" --weights "$weights" --input "$images")
        (( ${#results[@]} )) && cmd+=(--results "${results[@]}")
        tipc_run "$dir/gate_parity.log" "$model_name" "$status_log" -- "${cmd[@]}"
    fi
}

if [[ "$MODE" == whole_infer ]]; then
    # Export each infer_model (converted reference weights) and infer with it.
    for k in "${!infer_models[@]}"; do
        infer_model=${infer_models[$k]}
        run_export=${infer_exports[$k]:-null}
        if [[ "$run_export" != null ]]; then
            entry="$LOG_PATH/infer_model_$k"
            export_dir="$entry/export"
            cmd=("$python")
            tipc_words "$run_export" cmd
            tipc_add cmd "$export_weights_key" "$infer_model"
            tipc_add cmd "$export_save_key" "$export_dir"
            tipc_run "$entry/export.log" "$model_name" "$status_log" -- "${cmd[@]}"
            run_inference "$export_dir${inference_dir:+/$inference_dir}" "$infer_img" "$infer_model" "$entry"
        else
            run_inference "$infer_model" "$infer_img" null "$LOG_PATH/infer_model_$k"
        fi
    done
else
    for g in "${!gpu_list[@]}"; do
        gpu=${gpu_list[$g]}
        device=${train_devices[$g]:-null}
        launch=()
        if [[ "$gpu" != -1 ]]; then
            IFS=',' read -r -a gpu_ids <<< "$gpu"
            if ! gpus_available "${#gpu_ids[@]}"; then
                skipped "training on gpus $gpu (needs ${#gpu_ids[@]} CUDA device(s), found ${GPU_COUNT:-0})"
                continue
            fi
            if (( ${#gpu_ids[@]} > 1 )); then
                launch=(-m paddle.distributed.launch "--devices=$gpu")
            else
                launch=(env "CUDA_VISIBLE_DEVICES=$gpu")
            fi
        fi
        for autocast in "${autocast_list[@]}"; do
            for trainer in "${trainer_list[@]}"; do
                if [[ -z "${train_cmd[$trainer]+set}" ]]; then
                    skipped "trainer $trainer (no line of the config defines it)"
                    continue
                fi
                run_train=${train_cmd[$trainer]}
                run_export=${export_cmd[$trainer]:-null}
                [[ "$run_train" == null ]] && continue
                tag="${trainer}_gpus_${gpu}_autocast_${autocast}"
                entry="$LOG_PATH/$tag"
                save_dir="$entry/train"
                if [[ "${launch[0]:-}" == env ]]; then
                    cmd=("${launch[@]}" "$python")
                else
                    cmd=("$python" "${launch[@]}")
                    (( ${#launch[@]} )) && cmd+=("--log_dir=$entry/launch_log")
                fi
                tipc_words "$run_train" cmd
                tipc_add cmd "$train_device_key" "$device"
                tipc_add cmd "$save_key" "$save_dir"
                tipc_add cmd "$iters_key" "$iters"
                tipc_add cmd "$batch_key" "$batch"
                tipc_add cmd "$pretrain_key" "$pretrain"
                tipc_add cmd "$autocast_key" "$autocast"
                tipc_add cmd "$train_param1_key" "$train_param1"
                tipc_run "$entry/train.log" "$model_name" "$status_log" -- "${cmd[@]}"
                # gate: the lite training lowered the loss
                tipc_run "$entry/gate_loss.log" "$model_name" "$status_log" -- \
                    "$python" test_tipc/gates.py loss --log "$save_dir/train_log.jsonl" --iters "$iters"
                weights="$save_dir/$train_model_name"
                if [[ "$eval_py" != null ]]; then
                    cmd=("$python")
                    tipc_words "$eval_py" cmd
                    tipc_add cmd "$pretrain_key" "$weights"
                    tipc_add cmd "$train_device_key" "$device"
                    tipc_add cmd "$eval_out_key" "$entry/eval.json"
                    tipc_run "$entry/eval.log" "$model_name" "$status_log" -- "${cmd[@]}"
                fi
                if [[ "$run_export" != null ]]; then
                    export_dir="$entry/export"
                    cmd=("$python")
                    tipc_words "$run_export" cmd
                    tipc_add cmd "$export_weights_key" "$weights"
                    tipc_add cmd "$export_save_key" "$export_dir"
                    tipc_run "$entry/export.log" "$model_name" "$status_log" -- "${cmd[@]}"
                    run_inference "$export_dir${inference_dir:+/$inference_dir}" "$train_infer_img" "$weights" "$entry"
                fi
            done
        done
    done
fi

[[ "${TIPC_DRY_RUN:-0}" == 1 ]] && exit 0
ran=$(grep -c 'with command - ' "$status_log" || true)
if (( ran == 0 )); then
    printf 'error: %s %s: no command ran (see %s)\n' "$model_name" "$MODE" "$skip_log" >&2
    exit 1
fi
printf '%s %s: %d commands, %d failed; status in %s\n' "$model_name" "$MODE" "$ran" "$TIPC_FAILED" "$status_log"
(( TIPC_FAILED == 0 ))
