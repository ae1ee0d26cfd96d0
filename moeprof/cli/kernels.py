"""`moeprof build-kernels`: compile the CUDA MXFP4 kernels ahead of time (nvcc only, no GPU needed)."""

from __future__ import annotations

import os

import typer

from moeprof.cli import app, defaults, positive_int, version_option
from moeprof.errors import MoeprofError

_HELP = (
    "Compile the CUDA MXFP4 kernels (mx_mma.cu at decode, mx_wgmma.cu at prefill) that the default "
    "configurations pick for these models and batches, into the kernel cache ($MOEPROF_CACHE_DIR, default "
    "~/.cache/moeprof). Needs nvcc ($MOEPROF_NVCC, PATH or $CUDA_HOME/bin), not a GPU: a GPU machine then "
    "loads them instead of compiling on first use (a shape not built here still compiles then)."
)


@app.command("build-kernels", help=_HELP, short_help="Compile the CUDA MXFP4 kernels ahead of time (nvcc, no GPU needed).")
def build_kernels(
    model: str = typer.Option(defaults.MODEL, "--model", "-m",
                              help="Comma-separated presets or paths to Hugging Face config.json files."),
    batch: str = typer.Option(defaults.ROOFLINE_BATCHES, "--batch", "-b", help="Tokens per layer call: 1,2,4 or LO..HI (doubling)."),
    jobs: str = typer.Option(str(os.cpu_count() or 1), "--jobs", "-j", metavar="INT", help="nvcc processes at a time."),
    list_only: bool = typer.Option(False, "--list", help="List the kernel shapes and where their cubins go; build nothing."),
    _version: bool = version_option(),
) -> None:
    n_jobs = positive_int(jobs, "--jobs")
    # Imported here so that `moeprof --help` does not pay for torch.
    from moeprof.models.kernels import moe_gemm, mx_cuda
    from moeprof.models.layer import model_shapes
    from moeprof.roofline.bound import parse_batches

    batches = parse_batches(batch)
    names = [m.strip() for m in model.split(",") if m.strip()]
    if not names:
        raise MoeprofError("no model given (--model)")
    variants = moe_gemm.cuda_variants([model_shapes(m) for m in names], batches)
    where = mx_cuda.cache_dir()
    if list_only:
        for v in variants:
            typer.echo(f"{v.stem:<9} {v.tag():<22} {mx_cuda.cubin_path(v)}")
        typer.echo(f"{len(variants)} kernel shapes for {', '.join(names)} at batch {batches[0]}..{batches[-1]}")
        return

    def done(r) -> None:
        state = "cached" if r.cached else "built" if r.cubin is not None else "FAILED"
        typer.echo(f"{state:<7} {r.variant.stem:<9} {r.variant.tag():<22} {r.cubin or r.error}")

    try:
        results = mx_cuda.build_all(variants, jobs=n_jobs, on_done=done)
    except RuntimeError as exc:  # no nvcc
        raise MoeprofError(f"{exc}; without it the kernels are not built and the layers run the Triton ones") from None
    failed = [r for r in results if r.cubin is None]
    built = sum(1 for r in results if r.cubin is not None and not r.cached)
    typer.echo(f"{len(results)} kernel shapes in {where}: {built} built, "
               f"{len(results) - built - len(failed)} already there, {len(failed)} failed")
    if failed:
        raise MoeprofError(f"{len(failed)} of {len(results)} kernel shapes failed to build (FAILED lines above)")
