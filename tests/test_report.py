"""Tests for seqmd_tf.report: JSON and markdown files and the terminal summary."""

import copy
import json
import math
import os

import numpy as np
import pytest

from seqmd_tf import metrics, report


def make_task_metrics(base, lists):
    return {
        "ndcg@5": base,
        "ndcg@10": base + 0.01,
        "ndcg": base + 0.02,
        "mrr": base + 0.03,
        "auc": base + 0.04,
        "lists": lists,
    }


def make_region(lists, dpr_rate, click_base, purchase_base):
    return {
        "lists": lists,
        "dpr_violation_rate": dpr_rate,
        "click": {
            "model": make_task_metrics(click_base, lists - 5),
            "original": make_task_metrics(click_base - 0.1, lists - 5),
        },
        "purchase": {
            "model": make_task_metrics(purchase_base, 3),
            "original": make_task_metrics(purchase_base + 0.2, 3),
        },
    }


@pytest.fixture
def result():
    """A hand-built result in the layout of metrics.evaluate_lists, with round numbers."""
    purchase_model = make_task_metrics(0.3, 20)
    purchase_model["auc"] = None
    return {
        "tasks": ["click", "purchase"],
        "num_lists": 180,
        "num_items": 1500,
        "min_region_lists": 50,
        "scorers": dict(metrics.SCORER_DESCRIPTIONS),
        "overall": {
            "click": {
                "model": make_task_metrics(0.6, 150),
                "model_score": make_task_metrics(0.55, 150),
                "original": make_task_metrics(0.5, 150),
            },
            "purchase": {
                "model": purchase_model,
                "model_score": make_task_metrics(0.3, 20),
                "original": make_task_metrics(0.25, 20),
            },
        },
        "regions": {
            "BR": make_region(60, 0.2, 0.7, 0.4),
            "US": make_region(70, 0.1, 0.6, 0.3),
            "other": make_region(50, 0.05, 0.5, 0.2),
        },
        "pooled_regions": ["DE", "FR"],
        "dpr_violation_rate": 0.125,
    }


def markdown_row(text, first_cell):
    """Return the cells of the markdown table row whose first cell is `first_cell`."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r} in:\n{text}")


def markdown_section(text, heading):
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end == -1 else text[start:end]


def test_json_sorted_and_indented(result, tmp_path):
    json_path = tmp_path / "eval.json"

    report.write_report(result, json_path, tmp_path / "eval.md")

    text = json_path.read_text()
    assert text == json.dumps(result, sort_keys=True, indent=2) + "\n"
    assert json.loads(text) == result


def test_json_nan_written_as_null(result, tmp_path):
    result["overall"]["click"]["model"]["mrr"] = math.nan
    json_path = tmp_path / "eval.json"

    report.write_report(result, json_path, tmp_path / "eval.md")

    loaded = json.loads(json_path.read_text())
    assert loaded["overall"]["click"]["model"]["mrr"] is None
    assert "NaN" not in json_path.read_text()


def test_markdown_task_table(result, tmp_path):
    markdown_path = tmp_path / "eval.md"

    report.write_report(
        result, tmp_path / "eval.json", markdown_path, title="Trivago run 3"
    )

    text = markdown_path.read_text()
    assert text.startswith("# Trivago run 3\n")
    click = markdown_section(text, "## Task `click`")
    assert (
        "| metric | model | original | delta | model_score | delta model_score |"
        in click
    )
    assert markdown_row(click, "ndcg@10") == [
        "ndcg@10",
        "0.6100",
        "0.5100",
        "+0.1000",
        "0.5600",
        "+0.0500",
    ]
    assert markdown_row(click, "auc") == [
        "auc",
        "0.6400",
        "0.5400",
        "+0.1000",
        "0.5900",
        "+0.0500",
    ]
    assert markdown_row(click, "lists with a positive")[1] == "150"


def test_markdown_missing_value(result, tmp_path):
    markdown_path = tmp_path / "eval.md"

    report.write_report(result, tmp_path / "eval.json", markdown_path)

    purchase = markdown_section(markdown_path.read_text(), "## Task `purchase`")
    assert markdown_row(purchase, "auc") == [
        "auc",
        "n/a",
        "0.2900",
        "n/a",
        "0.3400",
        "+0.0500",
    ]
    assert markdown_row(purchase, "mrr")[1:4] == ["0.3300", "0.2800", "+0.0500"]


def test_markdown_without_serving_score(result, tmp_path):
    for task_result in result["overall"].values():
        del task_result["model_score"]
    del result["scorers"]["model_score"]
    markdown_path = tmp_path / "eval.md"

    report.write_report(result, tmp_path / "eval.json", markdown_path)

    click = markdown_section(markdown_path.read_text(), "## Task `click`")
    assert "| metric | model | original | delta |\n" in click
    assert markdown_row(click, "ndcg@5") == ["ndcg@5", "0.6000", "0.5000", "+0.1000"]


def test_markdown_region_table(result, tmp_path):
    markdown_path = tmp_path / "eval.md"

    report.write_report(result, tmp_path / "eval.json", markdown_path)

    regions = markdown_section(markdown_path.read_text(), "## Regions")
    assert "pooled as `other` (DE, FR)" in regions
    header = markdown_row(regions, "region")
    assert header[:3] == ["region", "lists", "DPR violation rate"]
    assert header[3:7] == [
        "click lists with a positive",
        "click model",
        "click original",
        "click delta",
    ]
    assert markdown_row(regions, "US") == [
        "US",
        "70",
        "0.1000",
        "65",
        "0.6100",
        "0.5100",
        "+0.1000",
        "3",
        "0.3100",
        "0.5100",
        "-0.2000",
    ]
    assert markdown_row(regions, "other")[:3] == ["other", "50", "0.0500"]


def test_markdown_region_order(result, tmp_path):
    markdown_path = tmp_path / "eval.md"

    report.write_report(result, tmp_path / "eval.json", markdown_path)

    regions = markdown_section(markdown_path.read_text(), "## Regions")
    assert regions.index("| US |") < regions.index("| BR |")
    assert regions.index("| BR |") < regions.index("| other |")


def test_markdown_dpr_and_counts(result, tmp_path):
    markdown_path = tmp_path / "eval.md"

    report.write_report(result, tmp_path / "eval.json", markdown_path)

    text = markdown_path.read_text()
    dpr = markdown_section(text, "## DPR violation rate")
    assert "0.1250" in dpr
    assert "Lists: 180, valid items: 1500." in text
    assert "- `model`: each task's own logit ranks the list for that task." in text


def test_write_leaves_no_temp_files(result, tmp_path):
    report.write_report(result, tmp_path / "eval.json", tmp_path / "eval.md")

    assert sorted(os.listdir(tmp_path)) == ["eval.json", "eval.md"]


def test_written_files_world_readable(result, tmp_path):
    report.write_report(result, tmp_path / "eval.json", tmp_path / "eval.md")

    assert (tmp_path / "eval.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "eval.md").stat().st_mode & 0o777 == 0o644


def test_nan_rendered_as_missing(result):
    result["overall"]["click"]["model"]["ndcg@5"] = math.nan
    result["dpr_violation_rate"] = math.nan

    markdown = report.format_markdown(result, "Run")
    summary = report.format_summary(result)

    click = markdown_section(markdown, "## Task `click`")
    assert markdown_row(click, "ndcg@5")[1:4] == ["n/a", "0.5000", "n/a"]
    assert "funnel: n/a." in markdown
    assert ["click", "ndcg@5", "n/a", "0.5000", "n/a", "0.5500"] in [
        line.split() for line in summary.splitlines()
    ]
    assert summary.splitlines()[-1] == "DPR violation rate: n/a"


def test_write_overwrites_and_creates_dirs(result, tmp_path):
    json_path = tmp_path / "new" / "eval.json"
    markdown_path = tmp_path / "new" / "eval.md"
    report.write_report(result, json_path, markdown_path)
    result["num_lists"] = 999

    report.write_report(result, json_path, markdown_path)

    assert json.loads(json_path.read_text())["num_lists"] == 999
    assert "Lists: 999," in markdown_path.read_text()


def test_failed_write_keeps_old_file(result, tmp_path):
    json_path = tmp_path / "eval.json"
    json_path.write_text("old\n")
    broken = copy.deepcopy(result)
    broken["num_lists"] = object()

    with pytest.raises(TypeError):
        report.write_report(broken, json_path, tmp_path / "eval.md")

    assert json_path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["eval.json"]


def test_summary_task_rows(result):
    summary = report.format_summary(result)

    rows = [line.split() for line in summary.splitlines()]
    assert ["task", "metric", "model", "original", "delta", "model_score"] in rows
    assert ["click", "ndcg@10", "0.6100", "0.5100", "+0.1000", "0.5600"] in rows
    assert ["purchase", "auc", "n/a", "0.2900", "n/a", "0.3400"] in rows
    assert ["click", "lists", "150"] in rows


def test_summary_region_rows(result):
    summary = report.format_summary(result)

    rows = [line.split() for line in summary.splitlines()]
    assert ["US", "70", "click", "0.6100", "0.5100", "+0.1000"] in rows
    assert ["other", "50", "purchase", "0.2100", "0.4100", "-0.2000"] in rows
    assert summary.splitlines()[-1] == "DPR violation rate: 0.1250"


def test_summary_columns_aligned(result):
    lines = report.format_summary(result).splitlines()

    header = next(line for line in lines if line.startswith("task"))
    click_row = next(
        line for line in lines if line.startswith("click ") and "ndcg@10" in line
    )
    assert header.index("model ") == click_row.index("0.6100")
    assert header.index("original") == click_row.index("0.5100")


def test_report_of_evaluated_lists(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.random((12, 5)) < 0.9
    labels = {
        task: np.where(mask, (rng.random((12, 5)) < rate).astype(np.float64), -1.0)
        for task, rate in (("click", 0.4), ("purchase", 0.1))
    }
    model_scores = {task: rng.normal(size=(12, 5)) for task in labels}
    regions = np.array(["US"] * 6 + ["DE"] * 4 + ["FR"] * 2)
    result = metrics.evaluate_lists(
        labels,
        model_scores,
        model_scores["purchase"],
        mask,
        regions,
        min_region_lists=4,
    )
    json_path = tmp_path / "eval.json"
    markdown_path = tmp_path / "eval.md"

    report.write_report(result, json_path, markdown_path)

    assert json.loads(json_path.read_text()) == result
    text = markdown_path.read_text()
    assert "## Task `click`" in text
    assert "## Task `purchase`" in text
    assert markdown_row(text, "other")[1] == "2"
    summary_rows = [line.split() for line in report.format_summary(result).splitlines()]
    assert any(row[:3] == ["other", "2", "click"] for row in summary_rows)
