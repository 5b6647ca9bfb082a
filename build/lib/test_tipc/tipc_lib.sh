#!/usr/bin/env bash
# Helpers shared by prepare.sh and test_train_inference_python.sh: read a TIPC config by line
# number, resolve per-mode values, build commands as arrays, run them and log their status.
# Sourced, not run. Safe under `set -euo pipefail`. Not named common_func.sh: PaddleSeg's own
# runner sources test_tipc/common_func.sh, and certification drops its copy next to ours.

TIPC_MODES=(lite_train_lite_infer lite_train_whole_infer whole_infer)
TIPC_LAYOUT_LINES=52  # python test_tipc/configs.py --layout prints the whole line map
_rule='==========================='
# Lines whose key is fixed: a config with a line added or lost is rejected, not misread.
TIPC_FIXED_KEYS=(
    [0]="${_rule}train_params${_rule}" [1]=model_name [2]=python [3]=gpu_list
    [10]=train_model_name [11]=train_infer_img_dir [13]='##' [14]=trainer [15]=norm_train [16]=pact_train
    [17]=fpgm_train [18]=distill_train [21]='##' [22]="${_rule}eval_params${_rule}" [23]=eval [25]='##'
    [26]="${_rule}export_params${_rule}" [29]=norm_export [30]=quant_export [31]=fpgm_export
    [32]=distill_export [33]=export1 [34]=export2 [35]="${_rule}infer_params${_rule}" [36]=infer_model
    [37]=infer_export [38]=infer_quant [39]=inference
)
unset _rule

# tipc_key LINE: the text left of the first ':'.
tipc_key() {
    printf '%s\n' "${1%%:*}"
}

# tipc_value LINE: the text right of the first ':' (empty when the line has none).
tipc_value() {
    case "$1" in
        *:*) printf '%s\n' "${1#*:}" ;;
        *) printf '\n' ;;
    esac
}

# tipc_for_mode VALUE MODE: for `mode=value|mode=value` the value of MODE (empty when MODE is
# not listed); any other VALUE unchanged. Used on lines 6 and 8 only, as PaddleSeg's runner does.
tipc_for_mode() {
    local value=$1 mode=$2 item found="" all_modes=1
    local -a items
    IFS='|' read -r -a items <<< "$value"
    for item in "${items[@]}"; do
        if ! tipc_is_mode "${item%%=*}" || [[ "$item" != *=* ]]; then
            all_modes=0
        elif [[ "${item%%=*}" == "$mode" ]]; then
            found=${item#*=}
        fi
    done
    if (( all_modes )) && (( ${#items[@]} > 0 )); then
        printf '%s\n' "$found"
    else
        printf '%s\n' "$value"
    fi
}

# tipc_is_mode WORD: success when WORD is a TIPC mode.
tipc_is_mode() {
    local mode
    for mode in "${TIPC_MODES[@]}"; do
        [[ "$1" == "$mode" ]] && return 0
    done
    return 1
}

# tipc_split VALUE ARRAY: split a `|` list into the named array.
tipc_split() {
    local -n _out=$2
    IFS='|' read -r -a _out <<< "$1"
}

# tipc_add ARRAY KEY VALUE: append `KEY=VALUE` to the named command array, nothing when KEY or
# VALUE is `null` or empty (PaddleSeg's func_set_params).
tipc_add() {
    local -n _cmd=$1
    local key=$2 value=$3
    if [[ -z "$key" || "$key" == null || -z "$value" || "$value" == null ]]; then
        return 0
    fi
    _cmd+=("${key}=${value}")
}

# tipc_words VALUE ARRAY: append the whitespace-separated words of VALUE (a script and its
# fixed flags from the config) to the named array.
tipc_words() {
    local -n _dest=$2
    local -a _words
    read -r -a _words <<< "$1"
    _dest+=("${_words[@]}")
}

# tipc_show ARRAY...: the command as one shell-quoted line.
tipc_show() {
    local out="" word
    for word in "$@"; do
        if [[ "$word" =~ ^[A-Za-z0-9_./=,:+@%-]+$ ]]; then
            out+="$word "
        else
            out+="$(printf '%q' "$word") "
        fi
    done
    printf '%s\n' "${out% }"
}

# tipc_status STATUS MODEL COMMAND LOG STATUS_LOG: record one command's outcome in the standard
# form and count failures in TIPC_FAILED.
TIPC_FAILED=0
tipc_status() {
    local status=$1 model=$2 command=$3 log=$4 status_log=$5 line
    if [[ "$status" -eq 0 ]]; then
        line=" Run successfully with command - ${model} - ${command} - ${log}"
    else
        line=" Run failed with command - ${model} - ${command} - ${log}"
        TIPC_FAILED=$((TIPC_FAILED + 1))
    fi
    printf '%s\n' "$line" >> "$status_log"
    printf '%s\n' "$line"
}

# tipc_run LOG MODEL STATUS_LOG -- COMMAND...: run COMMAND with stdout+stderr into LOG, record it.
# In dry-run mode (TIPC_DRY_RUN=1) print `DRY <command>` instead of running and recording it.
tipc_run() {
    local log=$1 model=$2 status_log=$3 status=0
    shift 4
    if [[ "${TIPC_DRY_RUN:-0}" == 1 ]]; then
        printf 'DRY %s\n' "$(tipc_show "$@")"
        return 0
    fi
    mkdir -p "$(dirname "$log")"
    "$@" > "$log" 2>&1 || status=$?
    tipc_status "$status" "$model" "$(tipc_show "$@")" "$log" "$status_log"
    return "$status"
}

# tipc_read_config FILE: the config's lines into the global array TIPC_LINES, or exit 2.
tipc_read_config() {
    if [[ ! -f "$1" ]]; then
        printf 'error: %s: no such config file\n' "$1" >&2
        exit 2
    fi
    mapfile -t TIPC_LINES < "$1"
    if (( ${#TIPC_LINES[@]} < TIPC_LAYOUT_LINES )); then
        printf 'error: %s: %d lines, the TIPC layout needs %d (python test_tipc/configs.py --layout)\n' \
            "$1" "${#TIPC_LINES[@]}" "$TIPC_LAYOUT_LINES" >&2
        exit 2
    fi
    local i
    for i in "${!TIPC_FIXED_KEYS[@]}"; do
        if [[ "$(tipc_key "${TIPC_LINES[$i]}")" != "${TIPC_FIXED_KEYS[$i]}" ]]; then
            printf 'error: %s:%d: expected key %s, found %s (python test_tipc/configs.py --layout)\n' \
                "$1" "$((i + 1))" "${TIPC_FIXED_KEYS[$i]}" "$(tipc_key "${TIPC_LINES[$i]}")" >&2
            exit 2
        fi
    done
}

# tipc_check_mode MODE: exit 2 unless MODE is supported.
tipc_check_mode() {
    if ! tipc_is_mode "$1"; then
        printf 'error: unknown mode %q; known: %s\n' "$1" "${TIPC_MODES[*]}" >&2
        exit 2
    fi
}

# tipc_start SCRIPT ARGS...: the entry of both scripts: exactly CONFIG and MODE, the config read
# and checked into TIPC_LINES, CONFIG made absolute, MODE checked, then cd to the repository root.
# Sets CONFIG and MODE; exits 2 on bad arguments.
tipc_start() {
    local script=$1
    shift
    if [[ $# -ne 2 ]]; then
        printf 'usage: bash test_tipc/%s CONFIG MODE   (MODE: %s)\n' "$script" "${TIPC_MODES[*]}" >&2
        exit 2
    fi
    CONFIG=$1
    MODE=$2
    [[ "$CONFIG" == /* ]] || CONFIG="$PWD/$CONFIG"
    tipc_read_config "$CONFIG"
    tipc_check_mode "$MODE"
    cd "$ROOT" || exit 2
}

# tipc_check_input DIR MODE: exit 2 when prepare.sh filled the inference input DIR for another
# mode (DIR.mode names it). A DIR without that stamp (a folder of your own) is used as it is.
tipc_check_input() {
    local stamp="${1%/}.mode" prepared
    [[ -f "$stamp" ]] || return 0
    prepared=$(<"$stamp")
    if [[ "$prepared" != "$2" ]]; then
        printf 'error: %s holds the inference input of %s, not %s: run bash test_tipc/prepare.sh %s %s first\n' \
            "$1" "$prepared" "$2" "$CONFIG" "$2" >&2
        exit 2
    fi
}
