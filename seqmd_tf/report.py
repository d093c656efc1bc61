"""Write the result of `metrics.evaluate_lists` as JSON, markdown and a terminal table."""

import json
import os
import tempfile

from absl import logging

from seqmd_tf import metrics

# Metrics shown per task with a delta. The "lists" count gets its own row without one.
_SCORE_METRICS = ("ndcg@5", "ndcg@10", "ndcg", "mrr", "auc")
# The per-region tables compare this one metric, to keep one column pair per task.
_REGION_METRIC = "ndcg@10"
# Decimal places of every metric: 0.0001 resolves a 0.1% relative change of an NDCG
# near 0.5.
_DIGITS = 4
_MISSING = "n/a"
# mkstemp creates files readable only by the owner, but a report is meant to be shared.
_REPORT_FILE_MODE = 0o644


def _format_value(value):
    if value is None:
        return _MISSING
    if isinstance(value, int):
        return str(value)
    return f"{value:.{_DIGITS}f}"


def _format_delta(value, reference):
    if value is None or reference is None:
        return _MISSING
    return f"{value - reference:+.{_DIGITS}f}"


def _write_atomically(path, text):
    """Write `text` to `path` through a temporary file in the same directory.

    os.replace is atomic on POSIX within one file system, so a reader sees either the
    old file or the complete new one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        os.chmod(temp_path, _REPORT_FILE_MODE)
        with os.fdopen(handle, "w", encoding="utf-8") as temp_file:
            temp_file.write(text)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def _markdown_table(header, rows):
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _task_table(task_result):
    """Return markdown lines of one task: a row per metric, a column per ranking.

    Columns: model | original | delta, then model_score | delta model_score when the
    serving score was evaluated. Every delta is against the original order.
    """
    original = task_result[metrics.ORIGINAL_ORDER]
    header = ["metric", metrics.MODEL, metrics.ORIGINAL_ORDER, "delta"]
    has_serving_score = metrics.MODEL_SCORE in task_result
    if has_serving_score:
        header += [metrics.MODEL_SCORE, f"delta {metrics.MODEL_SCORE}"]

    rows = []
    for metric in _SCORE_METRICS:
        model_value = task_result[metrics.MODEL][metric]
        row = [
            metric,
            _format_value(model_value),
            _format_value(original[metric]),
            _format_delta(model_value, original[metric]),
        ]
        if has_serving_score:
            serving_value = task_result[metrics.MODEL_SCORE][metric]
            row += [
                _format_value(serving_value),
                _format_delta(serving_value, original[metric]),
            ]
        rows.append(row)

    # Every ranking uses the same lists, so one count per task suffices.
    lists_row = ["lists with a positive", _format_value(original["lists"]), "", ""]
    if has_serving_score:
        lists_row += ["", ""]
    rows.append(lists_row)
    return _markdown_table(header, rows)


def _ordered_regions(result):
    """Return `(name, entry)` pairs, larger regions first and "other" last.

    The order is rebuilt here because a result read back from sorted-key JSON has lost it.
    """
    return sorted(
        result["regions"].items(),
        key=lambda pair: (pair[0] == metrics.OTHER_REGION, -pair[1]["lists"], pair[0]),
    )


def _region_table(result):
    """Return markdown lines comparing NDCG@10 of the model and the original order per region."""
    tasks = result["tasks"]
    header = ["region", "lists", "DPR violation rate"]
    for task in tasks:
        header += [
            f"{task} lists with a positive",
            f"{task} {metrics.MODEL}",
            f"{task} {metrics.ORIGINAL_ORDER}",
            f"{task} delta",
        ]

    rows = []
    for region, region_result in _ordered_regions(result):
        row = [
            region,
            _format_value(region_result["lists"]),
            _format_value(region_result["dpr_violation_rate"]),
        ]
        for task in tasks:
            model_value = region_result[task][metrics.MODEL][_REGION_METRIC]
            original_value = region_result[task][metrics.ORIGINAL_ORDER][_REGION_METRIC]
            row += [
                _format_value(region_result[task][metrics.MODEL]["lists"]),
                _format_value(model_value),
                _format_value(original_value),
                _format_delta(model_value, original_value),
            ]
        rows.append(row)
    return _markdown_table(header, rows)


def format_markdown(result, title):
    """Render the result of `metrics.evaluate_lists` as a markdown document."""
    result = metrics.json_ready(result)
    lines = [
        f"# {title}",
        "",
        f"Lists: {result['num_lists']}, valid items: {result['num_items']}.",
        (
            "NDCG and MRR average over the lists with at least one positive for the task. "
            "AUC pools all valid items. Deltas are the ranking minus the original order."
        ),
        "",
        "Rankings:",
        "",
    ]
    lines += [
        f"- `{name}`: {description}." for name, description in result["scorers"].items()
    ]

    for task in result["tasks"]:
        lines += ["", f"## Task `{task}`", ""]
        lines += _task_table(result["overall"][task])

    lines += ["", f"## Regions: {_REGION_METRIC.upper()}", ""]
    pooled = result.get("pooled_regions") or []
    lines.append(
        f"Regions with fewer than {result['min_region_lists']} lists are pooled as "
        f"`{metrics.OTHER_REGION}`" + (f" ({', '.join(pooled)})." if pooled else ".")
    )
    lines.append("")
    lines += _region_table(result)

    lines += [
        "",
        "## DPR violation rate",
        "",
        (
            "Share of valid items where a task's predicted probability exceeds the "
            "probability of the task before it in the funnel: "
            f"{_format_value(result['dpr_violation_rate'])}."
        ),
        "",
    ]
    return "\n".join(lines)


def write_report(result, json_path, markdown_path, title="SEQ+MD evaluation"):
    """Write the result of `metrics.evaluate_lists` to a JSON file and a markdown file.

    The JSON has sorted keys, an indent of 2 and null for NaN. Each file is written to a
    temporary file first and then renamed, so an interrupted run leaves no partial file.
    """
    json_text = json.dumps(
        metrics.json_ready(result), sort_keys=True, indent=2, allow_nan=False
    )
    _write_atomically(json_path, json_text + "\n")
    _write_atomically(markdown_path, format_markdown(result, title))
    logging.info("Wrote evaluation report to %s and %s", json_path, markdown_path)


def _text_table(header, rows):
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip()
    ]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in rows
    ]
    return lines


def format_summary(result):
    """Return a compact plain-text table of the result for a terminal.

    The first table has one row per task and metric, with the model beside the original
    order. The second has one row per region and task, comparing NDCG@10.
    """
    result = metrics.json_ready(result)
    overall_rows = []
    has_serving_score = False
    for task in result["tasks"]:
        task_result = result["overall"][task]
        original = task_result[metrics.ORIGINAL_ORDER]
        has_serving_score = has_serving_score or metrics.MODEL_SCORE in task_result
        for metric in _SCORE_METRICS:
            model_value = task_result[metrics.MODEL][metric]
            row = [
                task,
                metric,
                _format_value(model_value),
                _format_value(original[metric]),
                _format_delta(model_value, original[metric]),
            ]
            if metrics.MODEL_SCORE in task_result:
                row.append(_format_value(task_result[metrics.MODEL_SCORE][metric]))
            overall_rows.append(row)
        overall_rows.append([task, "lists", _format_value(original["lists"]), "", ""])

    overall_header = ["task", "metric", metrics.MODEL, metrics.ORIGINAL_ORDER, "delta"]
    if has_serving_score:
        overall_header.append(metrics.MODEL_SCORE)
        overall_rows = [
            row + [""] * (len(overall_header) - len(row)) for row in overall_rows
        ]

    region_rows = []
    for region, region_result in _ordered_regions(result):
        for task in result["tasks"]:
            model_value = region_result[task][metrics.MODEL][_REGION_METRIC]
            original_value = region_result[task][metrics.ORIGINAL_ORDER][_REGION_METRIC]
            region_rows.append(
                [
                    region,
                    _format_value(region_result["lists"]),
                    task,
                    _format_value(model_value),
                    _format_value(original_value),
                    _format_delta(model_value, original_value),
                ]
            )
    region_header = [
        "region",
        "lists",
        "task",
        f"{_REGION_METRIC} {metrics.MODEL}",
        f"{_REGION_METRIC} {metrics.ORIGINAL_ORDER}",
        "delta",
    ]

    lines = [f"Lists: {result['num_lists']}, valid items: {result['num_items']}", ""]
    lines += _text_table(overall_header, overall_rows)
    lines += [""]
    lines += _text_table(region_header, region_rows)
    lines += ["", f"DPR violation rate: {_format_value(result['dpr_violation_rate'])}"]
    return "\n".join(lines)
