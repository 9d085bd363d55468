"""The recovered workflow graphs as Graphviz DOT or Mermaid text, from a JSON report.

Step nodes are labelled "service\\noperation"; calls are solid, events dashed and labelled with the
event; inferred edges are dotted; virtual (uninstrumented) peers are grey boxes.
"""

from __future__ import annotations


def _node_ids(workflow: dict) -> dict[str, str]:
    return {step["id"]: f"n{i}" for i, step in enumerate(workflow["steps"])}


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def workflow_dot(workflow: dict, edge_colors: dict[tuple[str, str], str] | None = None) -> str:
    """One workflow as a DOT digraph. `edge_colors` maps (source, target) step ids to a colour."""
    ids = _node_ids(workflow)
    lines = [f"digraph {_dot_quote(workflow['name'])} {{", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica"];',
             '  edge [fontname="Helvetica", fontsize=10];']
    for step in workflow["steps"]:
        attrs = [f"label={_dot_quote(step['service'] + chr(10) + step['operation'] + ' ×' + str(step['count']))}"]
        if step["role"] == "virtual":
            attrs.append('fillcolor="#dddddd", style="filled,dashed"')
        lines.append(f"  {ids[step['id']]} [{', '.join(attrs)}];")
    for edge in workflow["edges"]:
        if edge["source"] not in ids or edge["target"] not in ids:
            continue
        attrs = [f"label={_dot_quote((edge['event'] or '') + ' ×' + str(edge['count']))}"]
        style = "dotted" if edge["inferred"] else ("dashed" if edge["via"] == "event" else "solid")
        attrs.append(f"style={style}")
        color = (edge_colors or {}).get((edge["source"], edge["target"]))
        if color:
            attrs.append(f'color="{color}", fontcolor="{color}", penwidth=2')
        lines.append(f"  {ids[edge['source']]} -> {ids[edge['target']]} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines)


def report_dot(report: dict) -> str:
    return "\n\n".join(workflow_dot(wf) for wf in report["workflows"]) + "\n"


# Mermaid entity codes (decimal) for what would end a quoted label or be read as HTML / Markdown;
# "#" first so the codes themselves stay intact.
_MERMAID_ESCAPES = (("#", "#35;"), ('"', "#quot;"), ("&", "#38;"), ("<", "#lt;"), (">", "#gt;"),
                    ("`", "#96;"), ("|", "#124;"), ("%", "#37;"))


def _mermaid_text(text: str) -> str:
    """Text from the traces, safe inside a quoted Mermaid label: line breaks become spaces."""
    text = " ".join(text.splitlines())
    for char, code in _MERMAID_ESCAPES:
        text = text.replace(char, code)
    return text


def workflow_mermaid(workflow: dict) -> str:
    ids = _node_ids(workflow)
    lines = ["flowchart LR"]
    for step in workflow["steps"]:
        label = f"{_mermaid_text(step['service'])}<br/>{_mermaid_text(step['operation'])} ×{step['count']}"
        shape = ("[[", "]]") if step["role"] == "virtual" else ("[", "]")
        lines.append(f'  {ids[step["id"]]}{shape[0]}"{label}"{shape[1]}')
    for edge in workflow["edges"]:
        if edge["source"] not in ids or edge["target"] not in ids:
            continue
        label = _mermaid_text(f"{edge['event'] or 'call'} ×{edge['count']}")
        arrow = "-.->" if edge["via"] == "event" or edge["inferred"] else "-->"
        lines.append(f'  {ids[edge["source"]]} {arrow}|"{label}"| {ids[edge["target"]]}')
    return "\n".join(lines)


def report_mermaid(report: dict) -> str:
    parts = [f"%% {' '.join(wf['name'].splitlines())} ({wf['pattern']}, {wf['instances']} instances)\n"
             f"{workflow_mermaid(wf)}"
             for wf in report["workflows"]]
    return "\n\n".join(parts) + "\n"
