"""experiments_report: the experiments of the definitions (the paper's ablations) side by side, read
from Dagster's own record, the latest materialization of each experiment's retrieval_scores per
data scale, not from the files (which a re-run overwrites)."""

import re

import pandas as pd
from dagster import AssetExecutionContext, AssetKey, AssetRecordsFilter, MaterializeResult, MetadataValue, asset

from ...artifact_io import atomic_path, write_json, write_text
from ...evaluation_scopes import SCOPES
from ...reporting import data_scale_plot_png, png_markdown
from ..experiment import Experiment
from ..versions import experiments_code_version

_INTERVAL = re.compile(r"\[\s*([+-]?[\d.]+),\s*([+-]?[\d.]+)\s*\]")


def latest_scores(instance, key: AssetKey, scales: list[str]) -> dict[str, object]:
    """scale -> the latest materialization record of `key` for that partition (scales never
    materialized are left out)."""
    latest = {}
    for scale in scales:
        records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[scale]), limit=1).records
        if records:
            latest[scale] = records[0]
    return latest


def curve_rows(experiment: str, data_scales: dict[str, int], records: dict[str, object]) -> list[dict]:
    """One row per scale and scope from retrieval_scores' metadata (mean/<scope>, gain/<scope>,
    gain_95ci/<scope>), in the columns reporting.data_scale_plot_png draws."""
    rows = []
    for scale, record in records.items():
        metadata = {name: value.value for name, value in record.asset_materialization.metadata.items()}
        for scope in SCOPES:
            if f"mean/{scope}" not in metadata:
                continue
            retrofitted, gain = float(metadata[f"mean/{scope}"]), float(metadata[f"gain/{scope}"])
            interval = _INTERVAL.fullmatch(str(metadata.get(f"gain_95ci/{scope}", "")).strip())
            ci_low, ci_high = (float(interval[1]), float(interval[2])) if interval else (float("nan"), float("nan"))
            rows.append({"experiment": experiment, "scale": scale, "scale_rows": data_scales[scale], "scope": scope,
                         "base": retrofitted - gain, "retrofitted": retrofitted, "gain": gain, "ci_low": ci_low, "ci_high": ci_high,
                         "run_id": record.run_id, "timestamp": record.timestamp})
    return rows


def side_by_side_table(curve: pd.DataFrame, missing: list[str]) -> str:
    """A row per experiment and data scale: per scope the mean score, the base's, and the gain with its interval."""
    rows = []
    for (experiment, scale), group in curve.groupby(["experiment", "scale"], sort=False):
        row = {"experiment": experiment, "data scale": scale, "pairs": int(group["scale_rows"].iloc[0])}
        for scope in SCOPES:
            values = group[group["scope"] == scope]
            if values.empty:
                row.update({f"{scope}": "–", f"{scope} base": "–", f"{scope} gain [95% CI]": "–"})
                continue
            v = values.iloc[0]
            row.update({f"{scope}": f"{v.retrofitted:.4f}", f"{scope} base": f"{v.base:.4f}",
                        f"{scope} gain [95% CI]": f"{v.gain:+.4f} [{v.ci_low:+.4f}, {v.ci_high:+.4f}]"})
        row["run"] = str(group["run_id"].iloc[0])[:8]
        rows.append(row)
    rows += [{"experiment": name, "data scale": "no retrieval_scores yet"} for name in missing]
    # disable_numparse: the cells are formatted already; tabulate would re-parse "0.9150" and print 0.915
    return pd.DataFrame(rows).fillna("").to_markdown(index=False, disable_numparse=True) if rows else "no experiment has retrieval_scores yet"


def build(experiments: list[Experiment]):
    """experiments_report over `experiments` (the first one is the primary: the report's files are
    written under its artifacts, report/experiments/)."""

    @asset(group_name="evaluation", kinds={"matplotlib"}, deps=[exp.key("retrieval_scores") for exp in experiments],
           code_version=experiments_code_version("experiments_report", [exp.config for exp in experiments]),
           required_resource_keys={exp.resource_key for exp in experiments})
    def experiments_report(context: AssetExecutionContext) -> MaterializeResult:
        """Every experiment of the definitions side by side (the paper's ablations): per experiment
        and data scale, every scope's mean score (nDCG@10; F1 for bitext), the gain over the base model
        and its paired bootstrap interval, taken from the latest materialization of each
        experiment's retrieval_scores in this Dagster instance, and each experiment's data-scale
        curve as a plot. Experiments with no scores yet are listed as such; the report does not fail."""
        rows, missing, plots, names = [], [], {}, []
        for exp in experiments:
            config = exp.settings(context).pipeline()
            names.append(config.name)
            records = latest_scores(context.instance, exp.key("retrieval_scores"), list(config.data_scales))
            experiment_rows = curve_rows(config.name, config.data_scales, records)
            if not experiment_rows:
                missing.append(config.name)
                continue
            rows += experiment_rows
            plots[config.name] = exp.name, data_scale_plot_png(pd.DataFrame(experiment_rows))
        curve = pd.DataFrame(rows, columns=["experiment", "scale", "scale_rows", "scope", "base", "retrofitted", "gain",
                                            "ci_low", "ci_high", "run_id", "timestamp"])
        table = side_by_side_table(curve, missing)
        primary = experiments[0].settings(context).paths()
        folder = primary.report / "experiments"
        for file_name, png in plots.values():
            with atomic_path(folder / f"{file_name}.png") as tmp:
                tmp.write_bytes(png)
        write_text(table + "\n", folder / "experiments.md")
        write_json({"experiments": names, "without_scores": missing, "curve": curve.to_dict(orient="records")}, folder / "experiments.json")
        if missing:
            context.log.warning(f"no retrieval_scores materialized yet for: {', '.join(missing)}")
        return MaterializeResult(metadata={
            "experiments": MetadataValue.json(names),
            "experiments_with_scores": MetadataValue.json(sorted(set(curve["experiment"]), key=names.index)),
            "experiments_without_scores": MetadataValue.json(missing),
            "note": (f"no retrieval_scores materialized yet for: {', '.join(missing)}; materialize them, then this report again"
                     if missing else "every experiment has scores"),
            "table": MetadataValue.md(table),
            **{f"plot/{name}": MetadataValue.md(f"**{name}**\n\n" + png_markdown(png, f"data-scale curve of {name}"))
               for name, (_, png) in plots.items()},
            "path": MetadataValue.path(str(folder)),
        })

    return experiments_report
