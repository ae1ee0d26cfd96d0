"""Several GPUs: the sharded MoE layer (models/sharded.py) or a user's program launched by torchrun,
one Nsight Systems report per rank (`-o <name>.rank%q{RANK}`), Nsight Compute on one chosen rank.

Launch: `python -m torch.distributed.run --standalone --nproc_per_node N --no-python <per-rank argv>`,
where the per-rank argv is `nsys profile ... -o <base>.rank%q{RANK} python -m
moeprof.profiler._point_runner --spec S` (nsys expands %q{RANK} from each worker's environment).
For ncu, each worker runs `python -m moeprof.profiler.distributed --on-rank K --prefix JSON -- argv`,
which execs the ncu prefix on rank K and the plain program elsewhere (NCCL kernels are not
replayed: a collective replayed on one rank alone would wait forever for its peers).

Every child gets NVLink multicast switched off (COMM_ENV): the machines we run on do not allow it.

Per rank, the point runner writes its outcomes to <status>.rank<k> (one JSON line per batch, with
the rank's GPU name and UUID and the capture's run id); the capture merges them: a point is done
when every rank finished it, its layer time per repeat is the slowest rank's (the layer is done
when its last rank is), and the per-rank kernel tables go to kernels.csv with a `rank` column.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import uuid
from pathlib import Path

import pandas as pd

from moeprof import capture_folder as schema
from moeprof.errors import MoeprofError

COMM_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
NCU_SKIP_NCCL = ["--kernel-name", "regex:^(?!nccl)"]


def comm_env(env: dict[str, str]) -> dict[str, str]:
    """The child environment with NVLink multicast off (set unconditionally)."""
    env.update(COMM_ENV)
    return env


def torchrun_prefix(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "--no-python"]


def rank_pattern(base: Path) -> Path:
    """nsys/ncu output name that each rank expands to <base>.rank<k>."""
    return base.with_name(base.name + ".rank%q{RANK}")


def rank_file(base: Path, rank: int, suffix: str) -> Path:
    return base.with_name(f"{base.name}.rank{rank}{suffix}")


def on_rank_argv(rank: int, prefix: list[str], argv: list[str]) -> list[str]:
    """Per-rank argv that runs `prefix + argv` on `rank` and `argv` on the others."""
    return [sys.executable, "-m", "moeprof.profiler.distributed", "--on-rank", str(rank), "--prefix", json.dumps(prefix),
            "--", *argv]


def splice_torchrun(command: list[str], ranks: int) -> tuple[list[str], list[str]]:
    """Split a user's torchrun command into (launcher argv up to and with --no-python, program argv).

    torchrun's own parser finds where the program starts; a module (-m) or a Python script is turned
    into an explicit interpreter call so that a profiler can be put in front of it."""
    if not command:
        raise MoeprofError("--ranks N needs a command after --")
    exe = Path(command[0]).name
    if exe == "torchrun":
        head, rest = [command[0]], list(command[1:])
    elif exe.startswith("python") and command[1:3] == ["-m", "torch.distributed.run"]:
        head, rest = list(command[:3]), list(command[3:])
    else:
        raise MoeprofError(f"--ranks {ranks}: the command must start with torchrun (or python -m torch.distributed.run), "
                           f"got {command[0]!r}")
    try:
        from torch.distributed.run import get_args_parser
    except ImportError:
        raise MoeprofError("--ranks needs PyTorch (torch.distributed.run) to read the torchrun command") from None
    try:
        args = get_args_parser().parse_args(rest)
    except SystemExit:
        raise MoeprofError(f"--ranks {ranks}: torchrun cannot parse the command {' '.join(command)!r}") from None
    program = [args.training_script, *args.training_script_args]
    opts = rest[:len(rest) - len(program)]
    nproc = str(args.nproc_per_node)
    if nproc.isdigit() and int(nproc) != ranks:
        raise MoeprofError(f"--ranks {ranks} but the command starts {nproc} processes per node (--nproc_per_node)")
    opts = [o for o in opts if o not in ("-m", "--module", "--no-python", "--no_python")]
    if args.no_python:
        pass
    elif args.module:
        program = [sys.executable, "-u", "-m", *program]
    else:
        program = [sys.executable, "-u", *program]
    return [*head, *opts, "--no-python"], program


# ---------------------------------------------------------------------------------------------- parent side
def read_rank_statuses(status: Path, world: int) -> dict[int, dict[int, dict]]:
    """{rank: {batch: record}} from <status>.rank<k> files (ranks without a file are absent)."""
    out: dict[int, dict[int, dict]] = {}
    for r in range(world):
        p = status.with_name(status.name + f".rank{r}")
        if not p.exists():
            continue
        recs = {}
        for ln in p.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(ln)
                recs[int(rec["batch"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut short by a killed rank
        out[r] = recs
    return out


def merge_point(per_rank: dict[int, dict[int, dict]], batch: int, world: int) -> tuple[list[float] | None, str]:
    """Layer time per repeat (slowest rank) when every rank finished the point, else (None, reason)."""
    missing = [r for r in range(world) if batch not in per_rank.get(r, {})]
    if missing:
        return None, f"rank {', '.join(map(str, missing))}: no outcome (the rank died or was killed)"
    bad = [(r, per_rank[r][batch]) for r in range(world) if per_rank[r][batch].get("status") != "ok"]
    if bad:
        r, rec = bad[0]
        return None, f"rank {r}: {rec.get('reason', 'failed')}"
    series = [per_rank[r][batch].get("layer_time_ns") or [] for r in range(world)]
    n = min(len(s) for s in series)
    if n == 0:
        return None, "no timed calls"
    return [max(float(s[i]) for s in series) for i in range(n)], ""


def rank_kernels(read_report, base: Path, world: int, keep_format: str | None) -> tuple[pd.DataFrame, list[Path], dict[int, str]]:
    """Kernel tables of every rank's report, tagged with `rank`; (table, files read, {rank: why it is missing})."""
    frames, files, failed, starts = [], [], {}, {}
    for r in range(world):
        rep = rank_file(base, r, ".nsys-rep")
        if not rep.exists():
            failed[r] = f"no report {rep.name}"
            continue
        try:
            k, extra, session_start = read_report(rep)
        except MoeprofError as exc:
            failed[r] = str(exc)
            continue
        except (sqlite3.Error, OSError, ValueError, KeyError) as exc:  # a report cut short or damaged
            failed[r] = f"{rep.name}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            continue
        starts[r] = session_start
        if keep_format is not None:
            k = k[k["format"] == keep_format]
        frames.append(k.assign(**{schema.RANK_COLUMN: r}))
        files += [rep, *extra]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(out) and len(starts) == len(frames) and all(v is not None for v in starts.values()):
        # each report counts from its own session start: shift all onto the earliest rank's clock
        first = min(starts.values())
        shift = out[schema.RANK_COLUMN].map({r: v - first for r, v in starts.items()})
        out["start_ns"] = (pd.to_numeric(out["start_ns"]) + shift).astype("Int64")
    return out, files, failed


def session_start_ns(sqlite_path: Path) -> int | None:
    """UTC epoch ns at which an nsys session started (TARGET_INFO_SESSION_START_TIME), None if absent."""
    try:
        con = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT utcEpochNs FROM TARGET_INFO_SESSION_START_TIME").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return int(row[0]) if row and row[0] is not None else None


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


# ---------------------------------------------------------------------------------------------- rank side
def _emit(path: str, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def run_ranks(spec: dict) -> int:
    """One rank of a sharded sweep (the point runner under torchrun): every batch of spec['batches']."""
    import socket

    import torch
    import torch.distributed as dist

    from moeprof.models.sharded import ShardedMoeLayer
    from moeprof.profiler.nvtx import nvtx_range

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    status = f"{spec['status']}.rank{rank}"
    base = {"format": spec["format"], "rank": rank, "world_size": world, "run_id": spec.get("run_id")}
    want = int(spec.get("tp", 1)) * int(spec.get("ep", 1))
    if world != want:
        for b in spec["batches"]:
            _emit(status, {**base, "batch": b, "status": "failed",
                           "reason": f"started {world} ranks for tp*ep={want}"})
        return 2
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
        props = torch.cuda.get_device_properties(dev)
        base.update(gpu_name=props.name, gpu_uuid=str(getattr(props, "uuid", "")))
        dist.init_process_group("nccl", device_id=dev)
    else:  # CPU processes (gloo, Triton interpreter): the tests of the launch and merge path
        dev = torch.device("cpu")
        base.update(gpu_name="cpu", gpu_uuid="")
        dist.init_process_group("gloo")
    base.update(host=socket.gethostname(), local_rank=local)
    shape = spec["shape"]
    mode = spec["mode"]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(layer) -> float:
        """One call's time in ns: CUDA events on the GPU, the host clock on CPU."""
        if not cuda:
            t0 = time.perf_counter_ns()
            layer(nvtx=False)
            return float(time.perf_counter_ns() - t0)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        layer(nvtx=False)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e6
    for i, b in enumerate(spec["batches"]):
        try:
            layer = ShardedMoeLayer(**shape, fmt=spec["format"], batch=b, tp=spec.get("tp", 1), ep=spec.get("ep", 1),
                                    rank=rank, routing=spec.get("routing", "uniform"), seed=spec.get("seed", 0),
                                    device=dev, kernel=spec.get("kernel", "triton"))
            for _ in range(spec.get("warmup", 3)):
                layer(nvtx=False)
            sync()
            n_timed = spec.get("repeats", 20) if mode != "ncu" else 0
            # the process's first point: its timed calls once more first, discarded (as _point_runner does)
            for _ in range(n_timed if i == 0 else 0):
                dist.barrier()
                timed(layer)
            times = []
            for _ in range(n_timed):
                dist.barrier()  # the ranks start each call together, as a serving step does
                times.append(timed(layer))
            if mode in ("nsys", "ncu"):
                dist.barrier()
                with nvtx_range(f"rank{rank}", mode == "nsys"):  # ncu's NVTX filter wants moe/ at the top
                    for _ in range(spec.get("repeats", 1)):
                        dist.barrier()
                        layer(nvtx=True)
                sync()
            rec = {**base, "batch": b, "status": "ok", "layer_time_ns": times,
                   "timing": "cuda events per rank, eager, barrier before each call"
                             + (", after a discarded first pass" if i == 0 and n_timed else ""),
                   "experts_touched": int(layer.experts_touched), "token_range": list(layer.token_range),
                   "rows_received": int(getattr(layer, "rows_received", layer.token_range[1] - layer.token_range[0])),
                   "kernel": layer.kernel_name}
            _emit(status, rec)
            del layer
            if cuda:
                torch.cuda.empty_cache()
        except Exception as exc:  # noqa: BLE001 - the peers are blocked in a collective: report and leave
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:240]
            for b2 in spec["batches"][i:]:
                _emit(status, {**base, "batch": b2, "status": "failed", "reason": reason if b2 == b else "not run"})
            import traceback

            traceback.print_exc()
            return 1
    dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`--on-rank K --prefix JSON -- argv`: exec prefix + argv on rank K, argv elsewhere."""
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m moeprof.profiler.distributed --on-rank K --prefix JSON -- CMD ...", file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(prog="moeprof.profiler.distributed")
    ap.add_argument("--on-rank", type=int, required=True)
    ap.add_argument("--prefix", required=True)
    a = ap.parse_args(argv[:cut])
    cmd = argv[cut + 1:]
    if int(os.environ.get("RANK", "0")) == a.on_rank:
        cmd = [*json.loads(a.prefix), *cmd]
    os.execvp(cmd[0], cmd)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------------------------- capture side
def _nsys_reader(cap, env):
    from moeprof.profiler.collectors import nsys as nsys_mod

    def read(rep: Path):
        sql = nsys_mod.export_sqlite(cap.nsys, rep, env=env)
        return nsys_mod.read_kernels(sql), [sql], session_start_ns(sql)
    return read


def _record_ranks(folder, per_rank: dict[int, dict[int, dict]], run_id: str) -> None:
    """manifest['ranks']: world size and, per rank, the GPU and run id it reported."""
    m = folder.manifest
    ent = m.setdefault("ranks", {"world_size": m["workload"].get("world_size"), "run_id": run_id, "per_rank": {}})
    for r, recs in per_rank.items():
        for rec in recs.values():
            ent["per_rank"][str(r)] = {k: rec.get(k) for k in ("gpu_name", "gpu_uuid", "host", "local_rank", "run_id")}
            break


def sweep_sharded(cap, folder, pending: dict[str, list[int]]) -> None:
    """The tp/ep sweep: per format one torchrun under nsys (or plain, for CUDA-event times only), then
    ncu on one rank per point. Layer times come from the ranks' own CUDA events (slowest rank)."""
    from moeprof.profiler import capture as cp
    from moeprof.profiler.collectors import table, tools

    c, m = cap.cfg, folder.manifest
    world = c.tp * c.ep
    if not 0 <= c.ncu_rank < world:
        raise MoeprofError(f"--ncu-rank {c.ncu_rank}: the capture has ranks 0..{world - 1}")
    run_id = m.setdefault("ranks", {}).get("run_id") or new_run_id()
    m["ranks"] = {"world_size": world, "run_id": run_id, "per_rank": m["ranks"].get("per_rank", {})}
    env = comm_env(tools.nsys_env(cp._child_env()))
    for fmt, batches in pending.items():
        name = f"{fmt}_b{'-'.join(str(b) for b in batches)}"
        mode = "nsys" if cap.nsys else "events"
        cap._step(f"{fmt}: {world} ranks under {mode}, batches {batches}")
        spec_path = cap._spec(folder, mode, fmt, batches, name, c.repeats)
        spec = json.loads(spec_path.read_text())
        spec.update(run_id=run_id, world_size=world)
        cp.write_atomic(spec_path, json.dumps(spec, indent=1))
        status = Path(spec["status"])
        for r in range(world):
            status.with_name(status.name + f".rank{r}").unlink(missing_ok=True)
        base = folder.raw("nsys", name)
        per_rank_cmd = cp._runner(spec_path)
        if cap.nsys:
            from moeprof.profiler.collectors import nsys as nsys_mod

            per_rank_cmd = nsys_mod.profile_command(cap.nsys, rank_pattern(base), per_rank_cmd)
        rc, log = cp._run_logged(torchrun_prefix(world) + per_rank_cmd, folder.raw("logs", f"{mode}_{name}.log"), env,
                                 c.timeout_s)
        cap._advance()
        per_rank = read_rank_statuses(status, world)
        _record_ranks(folder, per_rank, run_id)
        rows, ok = [], []
        for b in batches:
            times, why = merge_point(per_rank, b, world)
            if times is None:
                m["points_failed"].append([fmt, b, why if rc == 0 else f"{why}; {cp._last_line(log, rc)}"])
                continue
            ok.append(b)
            rec0 = per_rank[0][b]
            touched = sum(int(per_rank[r][b].get("experts_touched") or 0) for r in range(world)) if c.ep > 1 \
                else rec0.get("experts_touched")
            rows += [{"format": fmt, "batch": b, "repeat": i, "layer_time_ns": t, "experts_touched": touched,
                      "kernel": rec0.get("kernel", "")} for i, t in enumerate(times)]
        if rows:
            folder.append(schema.POINTS_FILE, pd.DataFrame(rows, columns=list(schema.POINT_COLUMNS)), cp.empty_points())
        ev = m["collectors"]["events"]
        ev.update(status="ok" if rows else ev.get("status", "pending"), tool_version=f"torch {m['software'].get('torch')}")
        ev.setdefault("options", {})["timing"] = ["cuda events per rank, eager, barrier before each call; "
                                                   "layer time = slowest rank; each process's first point "
                                                   "after a discarded first pass"]
        if cap.nsys:
            k, files, failed = rank_kernels(_nsys_reader(cap, env), base, world, fmt)
            ent = m["collectors"]["nsys"]
            if len(k):
                folder.append(schema.KERNELS_FILE, k, table.empty_kernels())
                ent["status"] = "ok"
            ent["files"] += [folder.rel(p) for p in files]
            if failed:
                ent.setdefault("ranks_failed", {}).update({f"{name}.rank{r}": why for r, why in failed.items()})
                if not len(k):
                    ent.update(status="failed", reason=f"no rank report could be read: {next(iter(failed.values()))}")
        folder.save()
        for b in ok:
            if cap.ncu:
                _ncu_one_rank(cap, folder, fmt, b, env, rank=c.ncu_rank)
            m["points_done"].append([fmt, b])
            folder.save()


def _ncu_one_rank(cap, folder, fmt: str, batch: int, env: dict[str, str], rank: int = 0) -> None:
    """ncu on `rank` for one point; the other ranks run unprofiled beside it."""
    from moeprof.profiler import capture as cp
    from moeprof.profiler.collectors import ncu as ncu_mod
    from moeprof.profiler.collectors import table

    c = cap.cfg
    world = c.tp * c.ep
    name = f"{fmt}_b{batch}"
    spec_path = cap._spec(folder, "ncu", fmt, [batch], name, c.ncu_repeats)
    spec = json.loads(spec_path.read_text())
    spec.update(run_id=folder.manifest["ranks"]["run_id"], world_size=world)
    cp.write_atomic(spec_path, json.dumps(spec, indent=1))
    base = folder.raw("ncu", name)
    out = rank_file(base, rank, "")
    opts = folder.manifest["collectors"]["ncu"]["options"]
    prefix = ncu_mod.profile_command(cap.ncu, out, [], cap.ncu_metrics, nvtx_include=opts["nvtx_include"],
                                     launch_count=c.ncu_launch_count, clock_control=c.clock_control,
                                     cache_control=c.cache_control) + NCU_SKIP_NCCL
    cmd = torchrun_prefix(world) + on_rank_argv(rank, prefix, cp._runner(spec_path))
    rc, log = cp._run_logged(cmd, folder.raw("logs", f"ncu_{name}.log"), env, c.timeout_s)
    cap._advance()
    rep = out.with_name(out.name + ".ncu-rep")
    ent = folder.manifest["collectors"]["ncu"]
    if ncu_mod.PERM_ERROR in log or not rep.exists():
        return cap._fail(folder, "ncu", ncu_mod.failure_reason(log, rc))
    try:
        csv_path = ncu_mod.export_csv(cap.ncu, rep)
        k, _ = ncu_mod.read_csv(csv_path)
    except MoeprofError as exc:
        return cap._fail(folder, "ncu", str(exc))
    folder.append(schema.KERNELS_FILE, k.assign(**{schema.RANK_COLUMN: rank}), table.empty_kernels())
    ent["files"] += [folder.rel(rep), folder.rel(csv_path)]
    ent["options"]["rank"] = rank
    if ent["status"] == "pending":
        ent["status"] = "ok"
    folder.save()


def sweep_external_ranks(cap, folder) -> None:
    """`capture --ranks N -- torchrun ... CMD`: the program's ranks each under nsys, one report per rank."""
    from moeprof.profiler import capture as cp
    from moeprof.profiler.collectors import nsys as nsys_mod
    from moeprof.profiler.collectors import table, tools

    c, m = cap.cfg, folder.manifest
    launcher, program = splice_torchrun(list(c.command), c.ranks)
    m["ranks"] = {"world_size": c.ranks, "run_id": new_run_id(), "per_rank": {}}
    ent = m["collectors"]["nsys"]
    if not cap.nsys:
        ent.setdefault("reason", "nsys not available")
        return folder.save()
    env = comm_env(tools.nsys_env(cp._child_env()))
    base = folder.raw("nsys", "external")
    cmd = launcher + nsys_mod.profile_command(cap.nsys, rank_pattern(base), program)
    cap._step(f"{c.ranks} ranks under nsys")
    rc, log = cp._run_logged(cmd, folder.raw("logs", "nsys_external.log"), env, c.timeout_s)
    cap._advance()
    k, files, failed = rank_kernels(_nsys_reader(cap, env), base, c.ranks, None)
    if len(k):
        folder.append(schema.KERNELS_FILE, k, table.empty_kernels())
        ent["status"] = "ok"
    else:
        ent.update(status="failed", reason=f"no rank report could be read: "
                                           f"{next(iter(failed.values()), cp._last_line(log, rc))}")
    ent["files"] += [folder.rel(p) for p in files]
    if failed:
        ent["ranks_failed"] = {f"external.rank{r}": why for r, why in failed.items()}
    if rc != 0:
        ent["program_exit"] = cp._last_line(log, rc)
    folder.save()
