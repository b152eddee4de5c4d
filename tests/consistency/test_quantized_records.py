"""docs/quantized.md states the H100 numbers that the committed records hold."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _doc() -> str:
    """The page with each run of whitespace as one space, so a number may be stated across a line break."""
    return " ".join((ROOT / "docs" / "quantized.md").read_text(encoding="utf-8").split())


def test_the_kernel_table_is_the_recorded_run():
    record = json.loads((RESULTS / "w4a16-h100.json").read_text())
    assert record["environment"]["gpu"] == "NVIDIA H100 80GB HBM3"
    text = _doc()
    rows = record["decode"]
    assert {(d["N"], d["K"]) for d in rows} == {(4096, 4096), (21504, 4096), (4096, 21504), (1856, 2688), (2688, 1856)}
    for d in rows:
        row = (f"| {d['N']} x {d['K']} | {d['M']} | {d['w4a16_graph_us']:.1f} | {d['bf16_graph_us']:.1f} | "
               f"{d['speedup_vs_bf16_graph']:.2f} | {d['packed_bw_fraction_of_copy']:.1%} | "
               f"{d['speedup_vs_plain_pytorch_eager']:.1f} | {d['speedup_vs_plain_pytorch_layer_eager']:.1f} | "
               f"{d['speedup_vs_plain_pytorch_graph']:.1f} |")
        assert row in text, row
    moe = record["moe"][0]
    assert f"{moe['w4a16_graph_us']:.1f} µs against {moe['bf16_graph_us']:.1f} µs" in text
    # what the page says of the targets is what the record holds: prefill, the MoE step, decode's 2.5x bf16 at
    # M = 1 on every shape, 10x plain PyTorch in GPU time everywhere; the eager ratios as recorded
    assert min(d["speedup_vs_bf16_graph"] for d in record["prefill"] if d["M"] >= 2048) >= 0.8
    one_row = [d for d in record["decode"] if d["M"] == 1]
    assert min(d["speedup_vs_bf16_graph"] for d in one_row) >= 2.5
    assert record["moe"][0]["speedup_vs_bf16_graph"] >= 2.5
    rows = record["decode"] + record["moe"]
    assert min(d["speedup_vs_plain_pytorch_graph"] for d in rows) >= 10
    assert (f"({min(d['speedup_vs_plain_pytorch_graph'] for d in rows):.1f}–"
            f"{max(d['speedup_vs_plain_pytorch_graph'] for d in rows):.1f}× in a CUDA graph)") in text
    eager = [d["speedup_vs_plain_pytorch_eager"] for d in rows]
    assert f"which check and key every argument, run {min(eager):.1f}–{max(eager):.1f}×" in text
    long_or_moe = [d for d in rows if "experts" in d or max(d["N"], d["K"]) == 21504]
    assert {id(d) for d in rows if d["speedup_vs_plain_pytorch_eager"] >= 10} == {id(d) for d in long_or_moe}
    # eager through a served layer: 10x at every one-row shape, and the decode rows under it named
    layer = [d["speedup_vs_plain_pytorch_layer_eager"] for d in record["decode"]]
    layer_one_row = [d["speedup_vs_plain_pytorch_layer_eager"] for d in one_row]
    assert min(layer_one_row) >= 10 and min(d["speedup_vs_plain_pytorch_eager"] for d in record["moe"]) >= 10
    assert f"at every M = 1 shape ({min(layer_one_row):.1f}–{max(layer_one_row):.1f}×)" in text
    under = [d for d in record["decode"] if d["speedup_vs_plain_pytorch_layer_eager"] < 10]
    assert (f"the layer's eager ratios run {min(layer):.1f}–{max(layer):.1f}×, under 10× only at "
            + ", ".join(f"{d['N']} x {d['K']} M = {d['M']} ({d['speedup_vs_plain_pytorch_layer_eager']:.1f}×)" for d in under)
            + ".") in text
    sustained = {key: [d["sustained_us"][key] for d in record["decode"]] for key in record["decode"][0]["sustained_us"]}
    assert max(sustained["w4a16_layer"]) < min(sustained["w4a16_linear"])
    for key, words in (("w4a16_linear", "each through `w4a16_linear`"), ("w4a16_layer", "through the layer")):
        assert f"{min(sustained[key]):.1f}–{max(sustained[key]):.1f} µs {words}" in text
    for d in one_row:
        assert f"{d['speedup_vs_bf16_graph']:.2f}×" in text
    after = ", ".join(f"{d['bf16_graph_us_after_a_plain_kernel'] / d['w4a16_graph_us_after_a_plain_kernel_pdl']:.2f}×"
                      for d in one_row)
    assert f"the same shapes reach {after.rsplit(', ', 1)[0]} and {after.rsplit(', ', 1)[1]}" in text
    assert f"({moe['speedup_vs_bf16_graph']:.2f}×," in text and "**Against the targets:**" in text


def test_the_dependent_launch_numbers_are_the_recorded_ones_and_the_defaults_the_recorded_defaults():
    """Both launch orderings are timed in the run whose table the page shows; the defaults the run had are the
    module's, and what the page says of each ordering is what the run measured."""
    record = json.loads((RESULTS / "w4a16-h100.json").read_text())
    source = (ROOT / "src" / "hybridload" / "kernels" / "_w4a16_triton.py").read_text()
    env = record["environment"]
    assert f"GEMV_PDL = {env['gemv_pdl_default']}" in source and f"MMA_PDL = {env['mma_pdl_default']}" in source
    assert env["decode_pdl_supported"]
    text = _doc()
    for d in record["decode"]:
        assert d["w4a16_graph_us_pdl"] > 0 and d["w4a16_graph_us_plain_launch"] > 0
        if d["M"] == 1:
            pair = f"{d['N']} x {d['K']} {d['w4a16_graph_us_pdl']:.1f} against {d['w4a16_graph_us_plain_launch']:.1f} µs"
            assert pair in text, pair
    square = next(d for d in record["decode"] if (d["N"], d["K"], d["M"]) == (4096, 4096, 1))
    assert square["speedup_vs_bf16_graph"] >= 2.5
    after = (f"{square['w4a16_graph_us_after_a_plain_kernel_pdl']:.1f} µs launched as a dependent and "
             f"{square['w4a16_graph_us_after_a_plain_kernel']:.1f} µs plainly, bf16 cuBLAS {square['bf16_graph_us_after_a_plain_kernel']:.1f} µs")
    assert after in text, after
    assert (f"4096 x 4096 ({square['speedup_vs_bf16_graph']:.2f}×, {square['w4a16_graph_us']:.1f} µs against "
            f"{square['bf16_graph_us']:.1f} µs)") in text
    bw = record["copy_bandwidth_gbps"] * 1e9
    for n, k in ((21504, 4096), (4096, 21504)):
        d = next(d for d in record["decode"] if (d["N"], d["K"], d["M"]) == (n, k, 1))
        assert d["speedup_vs_bf16_graph"] >= 2.5 and d["packed_bytes"] / (d["w4a16_graph_us_pdl"] * 1e-6) / bw >= 0.7
        assert d["packed_bw_fraction_of_copy"] >= 0.7
    dependent = [d["packed_bytes"] / (d["w4a16_graph_us_pdl"] * 1e-6) / bw for d in record["decode"]
                 if d["M"] == 1 and max(d["N"], d["K"]) == 21504]
    assert f"{dependent[0]:.1%} and {dependent[1]:.1%} in the dependent-launch timings" in text
    small = json.loads((RESULTS / "w4a16-decode-small-pdl-h100.json").read_text())
    assert small["environment"]["gemv_pdl_default"]
    for n, k in ((1856, 2688), (2688, 1856)):
        rows = [d for d in small["linear"] if (d["N"], d["K"]) == (n, k)]
        assert len(rows) == 57 and f"{max(d['speedup_vs_bf16'] for d in rows):.2f}×" in text
    slower = [d["w4a16_graph_us_pdl"] > d["w4a16_graph_us_plain_launch"] for d in record["decode"] if d["M"] > 1]
    assert f"measured slower at {sum(slower)} of the table's {len(slower)} shapes and row counts" in text


def test_the_early_decode_numbers_are_the_recorded_ones_and_the_rule_the_recorded_choice(monkeypatch):
    """The ten-shape check ran in the table's run; its dispatch rows took what ``_gemv_config`` picks on an
    H100's 132 SMs (the early decode at three shapes), and the page's figures of it and of the sweep that chose
    the option are the records'."""
    from hybridload.kernels import w4a16

    check = json.loads((RESULTS / "w4a16-decode-ahead-h100.json").read_text())
    table = json.loads((RESULTS / "w4a16-h100.json").read_text())
    assert check["environment"] == table["environment"] and check["environment"]["multiprocessors"] == 132
    monkeypatch.setattr(w4a16, "_sm_count", lambda index: 132)
    text = _doc()
    rows = check["linear"]
    dispatch = {(r["N"], r["K"]): r for r in rows if r["kernel"] == "dispatch"}
    assert len(dispatch) == 10
    for (n, k), row in dispatch.items():
        assert row["config"] == w4a16._gemv_config(1, n, -(-k // 16), torch.device("cuda", 0)), (n, k)
    ahead = {shape for shape, row in dispatch.items() if row["config"].get("DECODE_AHEAD")}
    assert ahead == {(1856, 2688), (2688, 1856), (1024, 4096)}

    def gemv(n, k, block_n, warps, early):
        return next(r["graph_us"] for r in rows if r["kernel"] == "gemv" and (r["N"], r["K"]) == (n, k)
                    and r["config"]["BLOCK_N"] == block_n and r["config"]["num_warps"] == warps
                    and bool(r["config"].get("DECODE_AHEAD")) == early)

    assert (f"dispatch took {dispatch[1856, 2688]['graph_us']:.2f} µs at 1856 x 2688 (8 x 64; "
            f"{gemv(1856, 2688, 8, 4, False):.2f} µs at that tile without the option), "
            f"{dispatch[2688, 1856]['graph_us']:.2f} µs at 2688 x 1856 (16 x 32; the previous choice, 8 x 64 at 4 warps, "
            f"{gemv(2688, 1856, 8, 4, False):.2f} µs) and {dispatch[1024, 4096]['graph_us']:.2f} µs at 1024 x 4096 "
            f"({gemv(1024, 4096, 8, 4, False):.2f} µs)") in text
    square = sorted((gemv(4096, 4096, 16, 8, True), gemv(4096, 4096, 8, 8, True)))
    assert f"{square[0]:.2f}–{square[1]:.2f} µs against {dispatch[4096, 4096]['graph_us']:.2f}" in text
    assert (f"8192 x 8192 ({gemv(8192, 8192, 16, 8, True):.2f} against {dispatch[8192, 8192]['graph_us']:.2f} µs)"
            in text)
    assert dispatch[2688, 1856]["speedup_vs_bf16"] >= 2.5
    assert f"the narrowest margin, {dispatch[2688, 1856]['speedup_vs_bf16']:.2f}× in the ten-shape check" in text
    aot = {}
    for line in (RESULTS / "w4a16-aot-sm90.md").read_text().splitlines():
        if line.startswith("| _gemv_kernel bf16, programmatic dependent launch"):  # dense rows, K unsplit
            cells = [c.strip() for c in line.strip("|").split("|")]
            aot[(int(cells[1]), int(cells[3]), "decoded before the wait" in cells[0])] = cells[5]
    registers = {key: int(re.search(r"Used (\d+) registers", props).group(1)) for key, props in aot.items()}
    assert (f"8 x 64 groups: {registers[8, 4, True]} at 4 warps against {registers[8, 4, False]}; "
            f"{registers[8, 8, True]} at 8 warps, 16 x 32: {registers[16, 8, True]}") in text
    widenings = {key: int(re.search(r"(\d+) e4m3 pair widenings", props).group(1)) for key, props in aot.items()}
    assert widenings[8, 8, True] == widenings[16, 8, True] > 0 and not any(v for k, v in widenings.items() if not k[2])
    assert f"PTX has {widenings[8, 8, True]} e4m3 pair widenings before `griddepcontrol.wait`" in text
    sweep = json.loads((RESULTS / "w4a16-decode-ahead-sweep-h100.json").read_text())
    flags = ("X_AHEAD", "G_AHEAD", "DECODE_AHEAD")
    times = {}
    for one in sweep["moved"]:
        for r in one["linear"]:
            if r["kernel"] == "gemv" and "graph_us" in r:
                c = r["config"]
                key = (r["N"], r["K"], c["BLOCK_N"], c["BLOCK_G"], c["PREFETCH"], c["SPLIT_K"], r["serial"],
                       "+".join(f for f in flags if c.get(f)) or "base")
                times.setdefault(key, []).append(r["graph_us"])
    spread = sorted(abs(v[0] / v[1] - 1) for v in times.values())
    assert all(len(v) == 2 for v in times.values()) and round(spread[len(spread) // 2] * 100) == 1

    def change(shape, tile, what):
        return min(times[(*shape, *tile, what)]) / min(times[(*shape, *tile, "base")]) - 1

    previous = {(4096, 4096): (8, 64, 2, 1, 0), (21504, 4096): (16, 32, 2, 1, 0), (4096, 21504): (32, 16, 1, 8, 1),
                (1856, 2688): (8, 64, 2, 1, 0), (2688, 1856): (8, 64, 2, 1, 0)}
    assert f"{-change((1856, 2688), previous[1856, 2688], 'DECODE_AHEAD'):.0%} faster at 1856 x 2688" in text
    assert f"{change((2688, 1856), previous[2688, 1856], 'DECODE_AHEAD'):.0%} slower at 2688 x 1856" in text
    assert f"{change((4096, 4096), previous[4096, 4096], 'DECODE_AHEAD'):.0%} slower at 4096 x 4096" in text
    split = [change(key[:2], key[2:7], "DECODE_AHEAD") for key in times if key[7] == "DECODE_AHEAD" and key[5] == 8]
    assert f"slower in {sum(v > 0 for v in split)} of {len(split)} cases (up to {max(split):.0%})" in text
    for what, words in (("X_AHEAD", "a step ahead"), ("G_AHEAD", "before the wait")):
        moved = [change(shape, tile, what) for shape, tile in previous.items()]
        low, high = f"{min(moved):+.0%}".replace("-", "−"), f"{max(moved):+.0%}"
        assert f"{words} ({low} to {high})" in text, (what, low, high)


def test_the_split_k_table_and_the_read_floors_are_the_recorded_ones():
    """The same-launch split K and read-floor numbers on the page are the split sweep's; 70% of copy bandwidth
    holds there on the large shapes with a workspace, and the read floor of the small shapes is below it."""
    record = json.loads((RESULTS / "w4a16-decode-split-h100.json").read_text())
    text = _doc()
    rows = [r for r in record["linear"] if r["run"] == 1]

    def fmt(row):
        return f"{row['graph_us']:.1f} µs ({row['packed_bw_fraction_of_copy']:.1%})"

    for n, k in ((4096, 21504), (21504, 4096), (4096, 4096), (1856, 2688), (2688, 1856)):
        dispatch = {r["serial"]: r for r in rows if r["kernel"] == "dispatch" and (r["N"], r["K"]) == (n, k)}
        floor = min((r for r in rows if r["kernel"] == "read_floor" and (r["N"], r["K"]) == (n, k)), key=lambda r: r["graph_us"])
        line = f"| {n} x {k} | {fmt(dispatch[0])} | "
        assert line in text, line
        assert fmt(dispatch[1]) in text and fmt(floor) in text
        assert f"{fmt(floor)} | {floor['graph_us'] / dispatch[1]['graph_us']:.0%} |" in text
        if max(n, k) == 21504:
            assert dispatch[1]["packed_bw_fraction_of_copy"] >= 0.70
        else:
            assert floor["packed_bw_fraction_of_copy"] < 0.70
    assert all(r.get("rel_l2_error_vs_dequantized_fp32", 0) < 8e-3 for r in record["linear"])


def test_the_decode_kernel_comparison_is_the_recorded_one():
    """The page's GEMV vs tensor-core numbers at 21504 x 4096 are the best tiles of the decode-kernels record,
    the dispatch (GEMV for one row, the MMA kernel for more) follows them, and the dispatch's own M = 1 times
    on the extra shapes are the recorded ones."""
    from hybridload.kernels import w4a16

    record = json.loads((RESULTS / "w4a16-decode-kernels-h100.json").read_text())
    text = _doc()

    def best(kernel, m, f16=None):
        rows = [r for r in record["linear"] if r["kernel"] == kernel and (r["N"], r["K"], r["M"]) == (21504, 4096, m)
                and "graph_us" in r and (f16 is None or r["config"].get("F16_DOT") == f16)]
        return min(r["graph_us"] for r in rows)

    assert (f"takes {best('gemv', 1, True):.1f} µs at its best tile against {best('gemv', 1, False):.1f} µs summing in fp32 and "
            f"{best('mma_gemv', 1):.1f} µs for the tensor-core GEMM") in text
    assert f"at M = 4, {best('gemv', 4):.1f} against {best('mma_gemv', 4):.1f} µs" in text
    assert best("gemv", 1, True) < best("gemv", 1, False) < best("mma_gemv", 1) and best("mma_gemv", 4) < best("gemv", 4)
    assert w4a16.GEMV_MAX_M == 1 and w4a16.MMA_MAX_M >= 4
    assert all(r.get("rel_l2_error_vs_dequantized_fp32", 0) < 8e-3 for r in record["linear"] + record["moe"])
    for row in record["linear"]:
        if row["kernel"] == "dispatch" and row["M"] == 1 and (row["N"], row["K"]) in ((8192, 8192), (1024, 4096)):
            assert f"{row['N']} x {row['K']} {row['graph_us']:.1f} µs ({row['speedup_vs_bf16']:.2f}×" in text


def test_the_whole_model_and_example_numbers_are_the_recorded_ones():
    model = json.loads((RESULTS / "w4a16-model-h100.json").read_text())
    text = _doc()
    assert f"({model['weight_bytes_ratio']:.2f}×)" in text
    assert f"{model['nvfp4']['gpu_bound_tokens_per_s']:.0f} against {model['bf16']['gpu_bound_tokens_per_s']:.0f} tokens/s" in text
    example = json.loads((RESULTS / "nvfp4-example-h100.json").read_text())
    assert example["client_equals_served"] and example["served_equals_reference"]
    assert f"{example['logits_rel_l2']:.1%}" in text
    assert f"{example['teacher_forced_argmax_agreement']:.0%} of the argmax" in text
    assert example["greedy_parts_at"] is None and example["served_tokens"] == example["twin_tokens"]
    assert f"model's {len(example['served_tokens'][0])} greedy tokens equal" in text
    assert f"{example['decode_steps_compared']} one-row decode steps within {example['decode_logits_rel_l2']:.1%}" in text


def test_the_weight_bytes_are_the_counted_ones_and_match_the_served_model():
    """The meta-tree count of the 8-layer model equals the bytes the GPU record measured on the served model;
    at Nemotron-3-Nano-30B-A3B's depth the whole model is within 0.3x of bf16, every quantized linear 9/32."""
    counted = json.loads((RESULTS / "w4a16-weight-bytes-cpu.json").read_text())["models"]
    served = json.loads((RESULTS / "w4a16-model-h100.json").read_text())
    small = counted["w4a16_model.py scale, 8 layers"]
    assert (small["served_bytes"], small["bf16_model_bytes"]) == (served["nvfp4"]["weight_bytes"], served["bf16"]["weight_bytes"])
    full = counted["nemotron-3-nano-30b-a3b widths, 52 layers"]
    assert full["served_over_bf16"] <= 0.3 < small["served_over_bf16"]
    for row in counted.values():
        assert 9 / 32 <= row["quantized_linears_over_bf16"] < 9 / 32 + 1e-4
    text = _doc()
    assert f"{full['served_bytes'] / 1e9:.2f} GB against {full['bf16_model_bytes'] / 1e9:.2f} GB, **{full['served_over_bf16']:.3f}×**" in text
    assert f"{small['served_bytes']:,} against {small['bf16_model_bytes']:,} bytes" in text
    assert f"{full['unquantized_share_of_served']:.1%} at Nemotron-3-Nano-30B-A3B" in text
