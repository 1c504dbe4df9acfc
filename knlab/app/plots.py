"""Results -> plotly figures. Nothing here computes; everything here draws."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from knlab.methods.predict import Prediction

PALETTE = {"bar": "#4C72B0", "hidden": "Purples", "mlp": "Greens", "attn": "Reds"}


def prediction_figure(pred: Prediction) -> go.Figure:
    labels = [repr(t.strip()) if t.strip() != t or not t.strip() else t for t in pred.top_tokens]
    fig = go.Figure(go.Bar(x=[float(p) for p in pred.top_probs][::-1], y=labels[::-1], orientation="h",
                           marker_color=PALETTE["bar"],
                           text=[f"{float(p):.1%}" for p in pred.top_probs][::-1], textposition="auto"))
    where = "[MASK]" if "[MASK]" in pred.prompt else "next token"
    fig.update_layout(title=f"{pred.model}: {where} after “{pred.prompt}”", xaxis_title="probability",
                      xaxis_range=[0, 1], height=120 + 32 * len(labels), margin=dict(l=10, r=10, t=50, b=40))
    return fig


def trace_figure(result) -> go.Figure:
    """The three-panel causal-trace figure in the style of the ROME paper: p(answer) per (token, layer),
    hidden states in purple, MLP in green, attention in red; subject tokens marked with '*'."""
    from plotly.subplots import make_subplots

    kinds = [k for k in ("hidden", "mlp", "attn") if k in result.grids]
    titles = {"hidden": "Restoring the hidden state", "mlp": f"Restoring MLP outputs (window {result.window})",
              "attn": f"Restoring attention outputs (window {result.window})"}
    s0, s1 = result.subject_range
    labels = [f"{t.strip() or repr(t)}{'*' if s0 <= i < s1 else ''}" for i, t in enumerate(result.tokens)]
    labels = [f"{i}: {lab}" for i, lab in enumerate(labels)]  # unique row labels even for repeated tokens
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[titles[k] for k in kinds], horizontal_spacing=0.09)
    for c, k in enumerate(kinds, start=1):
        grid = result.grids[k]
        fig.add_trace(go.Heatmap(
            z=grid, x=list(range(grid.shape[1])), y=labels, colorscale=PALETTE[k], zmin=min(result.corrupted, grid.min()),
            zmax=max(result.clean, grid.max()),
            colorbar=dict(title=f"p({result.answer})", x=(c - 0.08) / len(kinds) + 0.02 * (c == len(kinds)), len=0.9, thickness=10),
            hovertemplate="token %{y}<br>layer %{x}<br>p = %{z:.3f}<extra></extra>"), row=1, col=c)
        fig.update_xaxes(title_text="layer", row=1, col=c)
        fig.update_yaxes(autorange="reversed", showticklabels=(c == 1), row=1, col=c)
    fig.update_layout(height=160 + 26 * len(labels), margin=dict(l=10, r=10, t=60, b=40),
                      title=f"{result.model}: p({result.answer}) — clean {result.clean:.3f}, corrupted {result.corrupted:.3f}")
    return fig


def category_figure(summary) -> go.Figure:
    """Paper figure 13: average indirect effect per token category, per layer, one panel per kind."""
    from plotly.subplots import make_subplots

    kinds = list(summary.kinds)
    names = {"hidden": "hidden state", "mlp": "MLP", "attn": "attention"}
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[f"Restoring {names[k]}" for k in kinds],
                        shared_yaxes=True)
    colors = ["#9467bd", "#c5b0d5", "#6a3d9a", "#2ca02c", "#bcbd22", "#d62728"]
    for c, k in enumerate(kinds, start=1):
        for i, (cat, v) in enumerate(summary.kinds[k].items()):
            fig.add_trace(go.Scatter(x=list(range(len(v))), y=v, mode="lines+markers", name=cat,
                                     line=dict(color=colors[i % len(colors)]), legendgroup=cat, showlegend=c == 1),
                          row=1, col=c)
        fig.update_xaxes(title_text="layer", row=1, col=c)
    fig.update_yaxes(title_text="average indirect effect", row=1, col=1)
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=60, b=40),
                      title=f"{summary.model}: indirect effect by token category ({summary.n_prompts} prompt"
                            f"{'s' if summary.n_prompts != 1 else ''}{', ' + summary.source if summary.source else ''})")
    return fig


def attribution_overview(scores: np.ndarray, title: str, max_columns: int = 256) -> go.Figure:
    """Layers x neurons, binned along the neuron axis (each bin shows its largest score) so that a
    model with tens of thousands of neurons per layer still draws instantly."""
    L, W = scores.shape
    width = max(1, -(-W // max_columns))
    n_bins = -(-W // width)
    padded = np.full((L, n_bins * width), -np.inf)
    padded[:, :W] = scores
    binned = padded.reshape(L, n_bins, width).max(-1)
    x = [i * width for i in range(n_bins)]
    fig = go.Figure(go.Heatmap(z=binned, x=x, y=list(range(L)), colorscale="Viridis",
                               colorbar=dict(title="score"),
                               hovertemplate="layer %{y}<br>neurons %{x}+" + (f"{width - 1}" if width > 1 else "0")
                                             + "<br>max score %{z:.4g}<extra></extra>"))
    fig.update_layout(title=title + (f" (bins of {width} neurons)" if width > 1 else ""), xaxis_title="neuron",
                      yaxis_title="layer", height=200 + 18 * L, margin=dict(l=10, r=10, t=50, b=40))
    return fig


def layer_figure(scores: np.ndarray, layer: int, title: str) -> go.Figure:
    row = scores[layer]
    fig = go.Figure(go.Bar(x=list(range(len(row))), y=row, marker_color=PALETTE["bar"],
                           hovertemplate="neuron %{x}<br>score %{y:.4g}<extra></extra>"))
    fig.update_layout(title=f"{title}: layer {layer}, every neuron", xaxis_title="neuron", yaxis_title="score",
                      height=320, margin=dict(l=10, r=10, t=50, b=40))
    return fig


def note_under_title(figure: go.Figure, note: str) -> go.Figure:
    """``figure`` with ``note`` (Markdown emphasis dropped) in small type under its title: where a tab shows its
    result only as a figure, that is where a line about how it was computed goes."""
    title = figure.layout.title.text or ""
    figure.update_layout(title_text=f"{title}<br><sup>{note.strip('*')}</sup>")
    return figure


def paradigm_figure(analysis) -> go.Figure:
    """The paper's probability-change chart, one panel per target type (the seed's grouping: each type's KNs
    suppressed in its own prompts): relative change of each modifier's mean probability; '*' marks p < 0.05
    (two-sample t-test)."""
    from plotly.subplots import make_subplots
    colors = {"plural": "#d62728", "singular": "#1f77b4", "neutral": "#7f7f7f"}
    groups = analysis.groups
    fig = make_subplots(rows=1, cols=len(groups), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[f"{g.target}: {len(g.neurons)} KNs {g.neurons[:4]}{' ...' if len(g.neurons) > 4 else ''}"
                                        f"<br>overturned {g.overturned:.0%} of {g.n_prompts}" for g in groups])
    for col, g in enumerate(groups, start=1):
        for group in ("plural", "singular", "neutral"):
            sel = [t for t in g.tokens if t.group == group]
            fig.add_trace(go.Bar(x=[t.token for t in sel], y=[t.rel_change for t in sel], name=group,
                                 marker_color=colors[group], legendgroup=group, showlegend=col == 1,
                                 text=["*" if t.p_value < 0.05 else "" for t in sel], textposition="outside",
                                 customdata=[[t.pre, t.post, t.p_value] for t in sel],
                                 hovertemplate="%{x}<br>%{customdata[0]:.4f} -> %{customdata[1]:.4f}<br>"
                                               "change %{y:.1f}%<br>p = %{customdata[2]:.3g}<extra></extra>"),
                          row=1, col=col)
    fig.update_yaxes(title_text="relative change of mean probability (%)", row=1, col=1)
    fig.update_layout(title=f"{analysis.model}, {analysis.paradigm}: suppressing each target type's KNs "
                            f"(|KN| {analysis.kn_count:.1f}, R^2_1 {analysis.r2_1:.2f}: means over the types)",
                      height=460, margin=dict(l=10, r=10, t=110, b=40))
    return fig


CRITERION_COLOURS = {"reliability": "#4C72B0", "generality": "#55A868", "locality": "#8172B2",
                     "symmetry": "#C44E52", "symmetry_old": "#DD8452", "synonymy": "#937860"}


def edit_figure(report) -> go.Figure:
    """One row per probe: p(expected) before (hollow) and after (filled) the edit, coloured by criterion;
    a probe that holds is marked ✓."""
    probes = report.probes
    labels = [f"{'✓' if p.holds else '✗'} {p.criterion}: {p.prompt} → {p.expected}" for p in probes]
    fig = go.Figure()
    for name, values, opacity in (("before", [p.p_before for p in probes], 0.35),
                                  ("after", [p.p_after for p in probes], 1.0)):
        fig.add_trace(go.Bar(x=values[::-1], y=labels[::-1], orientation="h", name=name, opacity=opacity,
                             marker_color=[CRITERION_COLOURS.get(p.criterion, "#888") for p in probes][::-1]))
    fig.update_layout(barmode="group", title=f"{report.method.upper()} edit: {report.prompt} {report.old} → "
                      f"{report.new} — p(expected word) at each probe", xaxis_title="probability",
                      xaxis_range=[0, 1], height=160 + 28 * len(probes), margin=dict(l=10, r=10, t=50, b=40))
    return fig


def evaluation_figure(evaluation) -> go.Figure:
    """Live rates on this model beside the paper's published numbers (labelled as such)."""
    data = evaluation.to_json()
    crits = [c for c in ("reliability", "generality", "locality", "symmetry", "synonymy") if data.get(c) is not None]
    fig = go.Figure(go.Bar(x=crits, y=[100 * data[c] for c in crits], name=f"live: {evaluation.model}",
                           marker_color=PALETTE["bar"], text=[f"{100 * data[c]:.1f}%" for c in crits],
                           textposition="auto"))
    for model, row in data["published"].items():
        if model == "note":
            continue
        fig.add_trace(go.Bar(x=crits, y=[row.get(c) for c in crits], name=f"published: {model} (paper)",
                             opacity=0.6))
    fig.update_layout(barmode="group", yaxis_title="%", yaxis_range=[0, 105],
                      title=f"{evaluation.method.upper()} on {evaluation.relation}: {evaluation.n} facts, each "
                            f"edited on its own", height=420, margin=dict(l=10, r=10, t=50, b=40))
    return fig


def error_bars(values: list, intervals: list | None) -> dict | None:
    """A series' 95% intervals ([low, high] or None per point, as its values) as plotly's asymmetric error
    bars: ``array`` up to the high end, ``arrayminus`` down to the low end; None where nothing is given."""
    if not intervals:
        return None
    up, down = [], []
    for v, iv in zip(values, intervals):
        ok = v is not None and iv is not None and None not in iv[:2]
        up.append(max(0.0, float(iv[1]) - v) if ok else None)
        down.append(max(0.0, v - float(iv[0])) if ok else None)
    if all(u is None for u in up):
        return None
    return dict(type="data", symmetric=False, array=up, arrayminus=down, visible=True, thickness=1.5, width=4)


def runs_figure(runs: list, title: str) -> go.Figure:
    """Claim runs' figures side by side, one panel per model: the paper's own series (where it gives
    numbers) drawn beside the measured ones and labelled "(paper)"; a series with ``intervals`` carries its
    95% intervals as error bars."""
    from plotly.subplots import make_subplots

    runs = [r for r in runs if r.figure.get("series")]
    if not runs:
        return go.Figure()
    fig = make_subplots(rows=1, cols=len(runs), subplot_titles=[r.model for r in runs], shared_yaxes=True)
    colours = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]
    legend: dict[str, str] = {}
    for col, run in enumerate(runs, start=1):
        spec = run.figure
        x = [str(v) for v in spec["x"]] if spec["type"] == "bar" else spec["x"]
        intervals = spec.get("intervals") or {}
        for name, values in spec["series"].items():
            colour = legend.setdefault(name, colours[len(legend) % len(colours)])
            paper = "(paper)" in name or "Yao" in name
            common = dict(name=name, legendgroup=name, showlegend=col == 1 or name not in
                          {n for r in runs[: col - 1] for n in r.figure["series"]})
            values = [None if v is None else float(v) for v in values]
            bars = error_bars(values, intervals.get(name))
            if bars:
                common["error_y"] = bars
            if spec["type"] == "line":
                fig.add_trace(go.Scatter(x=x, y=values, mode="lines+markers", line=dict(color=colour,
                                         dash="dot" if paper else "solid"), **common), row=1, col=col)
            else:
                fig.add_trace(go.Bar(x=x, y=values, marker_color=colour, opacity=0.45 if paper else 1.0,
                                     marker_pattern_shape="/" if paper else "", **common), row=1, col=col)
        fig.update_xaxes(title_text=spec.get("xlabel", ""), row=1, col=col)
    fig.update_yaxes(title_text=runs[0].figure.get("ylabel", ""), row=1, col=1)
    fig.update_layout(title=title, barmode="group", height=460, margin=dict(l=10, r=10, t=70, b=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def claim_figure(result, label: str = "live") -> go.Figure:
    """A claim's figure, redrawn from a rerun's numbers (``label``: "live", or "recorded" for the record's
    runs): one panel per model, the paper's series beside, 95% intervals as error bars."""
    return runs_figure(result.runs, f"{result.title} ({result.source}): {label} beside the paper")


def recorded_figure(claim, runs: list) -> go.Figure:
    """A claim's recorded full-size runs (``studies.record``), one panel per model, beside the paper."""
    return runs_figure(runs, f"{claim.title} ({claim.source}): recorded, full size, beside the paper")


KNOCKOUT_COLOURS = {"subject": "#2ca02c", "non-subject": "#1f77b4", "last": "#d62728"}


def knockout_figure(result) -> go.Figure:
    """Geva et al.'s Fig. 2: the % change of p(answer) when the prediction position's attention edges to an
    edge set are cut in a window of layers around each layer, one line per edge set."""
    from knlab.methods.knockout import EDGE_LABELS
    fig = go.Figure()
    for e in result.probs:
        fig.add_trace(go.Scatter(x=list(range(len(result.probs[e]))), y=100 * result.change(e), mode="lines+markers",
                                 name=EDGE_LABELS[e], line=dict(color=KNOCKOUT_COLOURS.get(e))))
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    fig.update_layout(title=f"{result.model}: attention knockout, p({result.answer}) {result.clean:.3f} clean "
                            f"(edges cut in {result.window} layer(s) around each)",
                      xaxis_title="layer (centre of the cut window)", yaxis_title="% change of p(answer)",
                      height=360, margin=dict(l=10, r=10, t=60, b=40))
    return fig


def sweep_figure(result) -> go.Figure:
    """Hase et al.'s question for one fact: ROME's rewrite score at each edited layer beside the trace's
    effect per layer (MLP window and hidden state at the last subject token), the trace's peak and the best
    edit layer marked."""
    L = len(result.trace_mlp)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=result.layers, y=list(result.rewrite), mode="lines+markers", name="ROME rewrite score",
                             line=dict(color="#9467bd", width=3)))
    fig.add_trace(go.Scatter(x=list(range(L)), y=list(result.trace_mlp), mode="lines", name="tracing effect (MLP)",
                             line=dict(color="#2ca02c")))
    fig.add_trace(go.Scatter(x=list(range(L)), y=list(result.trace_hidden), mode="lines",
                             name="tracing effect (hidden)", line=dict(color="#7f7f7f", dash="dot")))
    fig.add_vline(x=result.trace_peak, line=dict(color="#2ca02c", dash="dash"),
                  annotation_text=f"trace peak {result.trace_peak}", annotation_position="top left")
    fig.add_vline(x=result.best_layer, line=dict(color="#9467bd", dash="dash"),
                  annotation_text=f"best edit {result.best_layer}", annotation_position="top right")
    fig.update_layout(title=f"{result.model}: {result.prompt} {result.old} -> {result.new}", xaxis_title="layer",
                      yaxis_title="score / effect", height=380, margin=dict(l=10, r=10, t=60, b=40))
    return fig
