"""The sections of docs/results.md, one kind of result JSON each: its markdown lines and its
figures. :data:`benchmarks.report.SECTIONS` maps each ``benchmark`` field to them."""

from __future__ import annotations

from pathlib import Path

from benchmarks import ab_report, report


def ab_tables(path: Path, d: dict) -> list[str]:
    arms = list(d["arms"])
    base = d["baseline"]
    shape = d.get("model_shape") or Path(d["model"]).name
    kwargs = next(iter(d["arms"].values())).get("engine_kwargs", {})
    for key, label in (("tensor_parallel_size", "TP"), ("data_parallel_size", "DP"),
                       ("pipeline_parallel_size", "PP")):
        if kwargs.get(key, 1) > 1:
            shape += f" {label}={kwargs[key]}"
    if d.get("rate_req_per_s"):
        shape += f", Poisson arrivals {d['rate_req_per_s']:g} req/s"
    lines = [f"#### {shape}, chunked prefill {d['chunked_prefill']} "
             f"({d['device']}, vLLM {d['vllm']}, commit {str(d['git_commit'])[:10]}, "
             f"{d['repetitions']} reps, `{path.name}`)", "",
             "| mix | padding | arm | prefill tok/s | TTFT mean s | TTFT p99 s | steps | "
             f"split prompts | packed share | tok/s vs {base} | TTFT mean vs {base} |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, w in d["workloads"].items():
        ratios = w["ratios_vs_" + base]
        for arm in arms:
            pa = w["per_arm"][arm]
            r = ratios.get(arm, {})
            lines.append(
                f"| {name} | {w['workload']['padding_ratio']:.1f}x | {arm} | "
                f"{pa['prefill_tokens_per_s']['mean']:,.0f} | {pa['ttft_mean_s']['mean']:.3f} | "
                f"{pa['ttft_p99_s']['mean']:.3f} | {pa['engine_steps']['mean']:.0f} | "
                f"{pa['split_prompts']['mean']:.0f} | {pa['packed_share']['mean']:.2f} | "
                f"{report.fmt_ratio(r['prefill_tokens_per_s']) if r else '1'} | "
                f"{report.fmt_ratio(r['ttft_mean_s']) if r else '1'} |")
    lines.append("")
    return lines


def trace_table(path: Path, d: dict) -> list[str]:
    """An offline trace replay: per load and arm, TTFT and throughput, ratios to the
    baseline with their spreads."""
    base = d["baseline"]
    t = d["trace"]
    resolved = next(iter(d["arms"].values()))["resolved"]
    sat = d.get("saturation") or {}
    lines = [f"#### Trace replay, {d.get('model_shape') or Path(d['model']).name}, "
             f"{d['entry_point']} ({d['device']}, vLLM {d['vllm']}, commit "
             f"{str(d['git_commit'])[:10]}, {d['repetitions']} reps, `{path.name}`)", "",
             f"{t['source']} requests {t['start']}..{t['start'] + t['n'] - 1}: prompts "
             f"{t['mean_len']:.0f} tokens mean ({t['clipped_prompts']} clipped), outputs "
             f"{t['mean_output_len']:.0f} mean; budget {resolved['max_num_batched_tokens']}, "
             f"{resolved['max_num_seqs']} sequences, prefix caching "
             f"{'on' if resolved['enable_prefix_caching'] else 'off'}"
             + (f"; stock saturation {sat['requests_per_s']:.2f} req/s" if sat else "")
             + f". Data: {t['attribution']}.", "",
             "| load | req/s | arm | TTFT mean s | TTFT p50 s | TTFT p99 s | out tok/s | "
             f"TTFT mean vs {base} | TTFT p99 vs {base} | out tok/s vs {base} |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for w in d["workloads"].values():
        load = w.get("load") or {}
        label = (f"{load['load_factor']:g}x sat" if "load_factor" in load
                 else f"{load.get('compression', 1):g}x time")
        ratios = w["ratios_vs_" + base]
        for arm, pa in w["per_arm"].items():
            r = ratios.get(arm, {})
            lines.append(
                f"| {label} | {load.get('rate_req_per_s', 0):.2f} | {arm} | "
                f"{pa['ttft_mean_s']['mean']:.3f} | {pa['ttft_p50_s']['mean']:.3f} | "
                f"{pa['ttft_p99_s']['mean']:.3f} | {pa['output_tokens_per_s']['mean']:,.0f} | "
                + " | ".join(report.fmt_ratio(r.get(m)) if r else "1" for m in
                             ("ttft_mean_s", "ttft_p99_s", "output_tokens_per_s")) + " |")
    lines.append("")
    for line in (ab_report.step_speed_lines(d) + ab_report.host_lines(d)
                 + ab_report.engine_split_lines(d)):
        lines += [line, ""]
    return lines


def kernel_table(path: Path, d: dict) -> list[str]:
    lines = [f"#### FA3 varlen, packed contiguous vs paged K/V ({d['device']}, "
             f"commit {str(d['git_commit'])[:10]}, `{path.name}`)", "",
             "| head shape (q, kv, dim) | pack tokens | prompts | packed ms | paged ms | "
             "paged/packed | max diff |", "|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        s = r["speedup_paged_over_packed"]
        lines.append(f"| {r['shape']} {tuple(r['heads_q_kv_dim'])} | {r['pack_tokens']} | "
                     f"{r['prompts']} | {r['packed_ms']['median']:.3f} | "
                     f"{r['paged_ms']['median']:.3f} | {report.fmt_ratio(s)} | "
                     f"{r['max_abs_diff_packed_vs_paged']:.0e} |")
    lines.append("")
    return lines


def equivalence_table(path: Path, d: dict) -> list[str]:
    parallel = "".join(f" {label}={d.get('engine_args', {}).get(key)}"
                       for key, label in (("tensor_parallel_size", "TP"),
                                          ("pipeline_parallel_size", "PP"))
                       if d.get("engine_args", {}).get(key, 1) > 1)
    lines = [f"#### Greedy equivalence, {d['model_shape']}{parallel} ({d['device']}, "
             f"commit {str(d['git_commit'])[:10]}, `{path.name}`)", "",
             "| pair | toggled | identical outputs | max logprob diff | classes that ran |",
             "|---|---|---|---|---|"]
    for pair, c in d["comparisons"].items():
        a, b = pair.split(" vs ")
        ran = "; ".join(
            f"{arm}: {d['runs'][arm]['scheduler_class'].rsplit('.', 1)[-1]} + "
            f"{d['runs'][arm]['attention_impls'][0].rsplit('.', 1)[-1]} "
            f"(packed layer calls {d['runs'][arm]['packed_counters']['layer_calls']})"
            for arm in (a, b))
        lines.append(f"| {pair} | {c['toggled']} | {c['identical_outputs']}/{c['outputs']} | "
                     f"{c['max_logprob_diff_on_shared_prefix']:.2g} | {ran} |")
    batch_inv = {r.get("batch_invariant") for r in d["runs"].values()}
    lines += ["", f"`VLLM_BATCH_INVARIANT={','.join(sorted(batch_inv))}`.", ""]
    return lines


def serving_section(path: Path, d: dict) -> list[str]:
    """A serving A/B: ratios and verdicts from the raw runs with the current rules."""
    from benchmarks import serve_report, step_source

    d["per_load"] = serve_report.aggregate(d["runs"], d["load_factors"], d["repetitions"])
    serve_args = d["arms"]["stock"].get("serve_args") or []
    ran = d["arms"].get("prepack", {}).get("prepack_options")
    options = (f" Prepack options (its engine core's log): policy {ran['policy']}, stretch "
               f"{ran['stretch']:g}, tail quantile {ran['tail_quantile']:g}, lookahead "
               f"{ran['lookahead']}, packed attention {ran['packed_attention']}."
               if isinstance(ran, dict) else "")
    steps = step_source.describe(d)
    return [serve_report.render_section(d),
            f"`{path.name}`; `vllm serve` arguments of both arms: "
            f"`{' '.join(map(str, serve_args))}`.{options}", ""] + ([steps, ""] if steps else [])


def paper_section(path: Path, d: dict) -> list[str]:
    from benchmarks import paper_report

    return [paper_report.render_section([d]), f"`{path.name}`", ""]


def offline_figures(path: Path, d: dict, out_dir: Path) -> list[str]:
    """An offline A/B: its trace-replay plots, or a TTFT CDF and a throughput bar chart."""
    if d.get("trace"):
        from benchmarks import ab

        return [p.name for p in ab.plot_trace(d, out_dir / path.stem)]
    return [_offline_cdf(d, out_dir / f"{path.stem}_ttft_cdf.png").name,
            _offline_throughput(d, out_dir / f"{path.stem}_throughput.png").name]


def _offline_cdf(d: dict, path: Path) -> Path:
    plt = report.pyplot()
    names = list(d["workloads"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        runs = d["workloads"][name]["runs"]
        report.cdf_panel(ax, {arm: [t for row in rows for t in row["ttft_s"]]
                              for arm, rows in runs.items()}, name)
    axes[0][0].set_ylabel("share of requests")
    axes[0][-1].legend(fontsize=7)
    report.suptitle(fig, "TTFT CDF", d, f"chunked {d['chunked_prefill']}")
    fig.tight_layout()
    return report.save_figure(fig, path)


def _offline_throughput(d: dict, path: Path) -> Path:
    plt = report.pyplot()
    names = list(d["workloads"])
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3))
    arms = list(d["arms"])
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        vals = [d["workloads"][n]["per_arm"][arm]["prefill_tokens_per_s"]["mean"] / 1e3
                for n in names]
        ax.bar([j + i * width for j in range(len(names))], vals, width, label=arm)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, fontsize=8)
    ax.set_ylabel("prefill k tok/s")
    ax.legend(fontsize=7)
    ax.set_title(f"Throughput: {report.model_name(d)}, chunked {d['chunked_prefill']}",
                 fontsize=9)
    fig.tight_layout()
    return report.save_figure(fig, path)


def serving_figures(path: Path, d: dict, out_dir: Path) -> list[str]:
    from benchmarks import serve_plots

    if not d.get("runs"):
        return []
    return [p.name for p in serve_plots.figures(d, out_dir / f"{path.stem}.png")]


def paper_figures(path: Path, d: dict, out_dir: Path) -> list[str]:
    from benchmarks import paper_report

    return [paper_report.plot(d, out_dir / f"{path.stem}_speedup.png").name] if d.get(
        "runs") else []
