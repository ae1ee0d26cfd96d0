"""`moeprof roofline`: analytical lower bound of one MoE layer per weight format over batch sizes. No GPU needed."""

from __future__ import annotations

import json
from typing import Optional

import typer

from moeprof.cli import app, defaults, positive_int, version_option

_HELP = (
    "Roofline lower bound of one MoE layer per weight format over batch sizes: which format is faster, "
    "by how much, where they cross over, and the whole-model weight memory. No GPU needed."
)


def _print_lists(as_json: bool) -> None:
    from moeprof.roofline.formats import all_formats
    from moeprof.roofline.gpus import all_gpus
    from moeprof.roofline.shapes import all_models

    models = [
        {"name": m.name, "experts": m.num_experts, "top_k": m.top_k, "moe_layers": m.num_moe_layers,
         "hidden": m.hidden_size, "intermediate": m.expert_intermediate_size, "total_params": m.total_params}
        for m in all_models()
    ]
    gpus = [{"name": g.name, "display_name": g.display_name, "aliases": list(g.aliases)} for g in all_gpus()]
    formats = [{"name": f.name, "description": f.description} for f in all_formats()]
    if as_json:
        print(json.dumps({"models": models, "gpus": gpus, "formats": formats}, indent=2))
        return
    print("models:")
    for m in models:
        print(f"  {m['name']:<18} {m['experts']} experts, top-{m['top_k']}, {m['moe_layers']} MoE layers, "
              f"{m['total_params'] / 1e9:.1f}B params")
    print("gpus:")
    for g in gpus:
        print(f"  {g['name']:<10} {g['display_name']} (aliases: {', '.join(g['aliases'])})")
    print("formats:")
    for f in formats:
        print(f"  {f['name']:<11} {f['description']}")


@app.command("roofline", help=_HELP, short_help="The analytical roofline per format and batch (no GPU needed).")
def roofline(
    model: str = typer.Option(defaults.MODEL, "--model", "-m", help="Preset name or path to a Hugging Face config.json."),
    gpu: str = typer.Option(defaults.GPU, "--gpu", "-g", help="GPU: h100-sxm, h100-pcie, h200-sxm, h20, b200 (aliases ok)."),
    formats: str = typer.Option(defaults.FORMATS, "--formats", "-f", help="Comma-separated weight formats."),
    batch: str = typer.Option(defaults.ROOFLINE_BATCHES, "--batch", "-b", help="Tokens per layer call: 1,2,4 or LO..HI (doubling)."),
    tp: str = typer.Option(str(defaults.TP), "--tp", metavar="INT", help="Tensor-parallel size (splits expert intermediate dim)."),
    ep: str = typer.Option(str(defaults.EP), "--ep", metavar="INT", help="Expert-parallel size (splits routed experts)."),
    link_gbps: Optional[float] = typer.Option(None, "--link-gbps", help="NVLink GB/s per direction for the tp/ep communication term [default: the GPU's datasheet figure; 2x H200 measured ~281 GB/s all-reduce bus bandwidth]."),
    routing: str = typer.Option(defaults.ROUTING, "--routing", help="uniform | zipf:S | hist:N1,N2,... (per-expert counts)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (records, verdicts, crossover, memory)."),
    list_all: bool = typer.Option(False, "--list", help="List models, GPUs and formats, then exit."),
    _version: bool = version_option(),
) -> None:
    if list_all:
        _print_lists(as_json)
        return

    # Imported here so that `moeprof --help` does not pay for pandas.
    from moeprof.roofline.report import report

    r = report(model, gpu, formats, batch, tp=positive_int(tp, "--tp"), ep=positive_int(ep, "--ep"),
               routing=routing, link_gbps=link_gbps)
    if as_json:
        from moeprof.reports.export import json_safe

        print(json.dumps(json_safe(r.to_json()), indent=2, allow_nan=False))
        return

    from rich.console import Console

    from moeprof.reports.roofline_view import render_roofline

    render_roofline(Console(), r)
