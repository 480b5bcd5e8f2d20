"""A self-contained API reference page, rendered on the server from the OpenAPI document.

No script, no stylesheet and no font is fetched from anywhere: the page is one
HTML document with inline CSS. Machine-readable: /openapi.json.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem} h2{margin-top:2.5rem;border-bottom:1px solid #ddd}
.op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.6rem 1rem}
.method{display:inline-block;min-width:4.5rem;font-weight:bold;font-family:monospace}
.path{font-family:monospace;font-size:1.05em} .muted{color:#666}
table{border-collapse:collapse;margin:.4rem 0} td,th{border:1px solid #ddd;padding:.2rem .5rem;
text-align:left;vertical-align:top} code,pre{font-family:monospace;background:#f6f6f6}
pre{padding:.5rem;overflow-x:auto}
"""
METHODS = ("get", "post", "put", "patch", "delete")


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    for combiner in ("anyOf", "oneOf"):
        if combiner in schema:
            return " | ".join(_type_of(s) for s in schema[combiner])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(f"<code>{escape(json.dumps(v))}</code>" for v in schema["enum"])
    if "format" in schema:
        return f"{escape(str(kind))} ({escape(schema['format'])})"
    return escape(str(kind))


def _content_schema(content: dict[str, Any]) -> str:
    for media in content.values():
        if "schema" in media:
            return _type_of(media["schema"])
    return ""


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    parts = [
        '<div class="op">',
        f'<span class="method">{method.upper()}</span> <span class="path">{escape(path)}</span>',
        f" — {escape(op.get('summary', ''))}",
    ]
    if op.get("security"):
        parts.append(' <span class="muted">(bearer token)</span>')
    if op.get("description"):
        parts.append(f"<p>{escape(op['description'])}</p>")
    params = op.get("parameters", [])
    if params:
        parts.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>about</th></tr>")
        for p in params:
            required = " (required)" if p.get("required") else ""
            parts.append(
                f"<tr><td><code>{escape(p['name'])}</code>{required}</td><td>{escape(p['in'])}"
                f"</td><td>{_type_of(p.get('schema', {}))}</td>"
                f"<td>{escape(p.get('description', ''))}</td></tr>"
            )
        parts.append("</table>")
    body = op.get("requestBody")
    if body:
        parts.append(f"<p>Body (JSON): {_content_schema(body.get('content', {}))}</p>")
    parts.append("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
    for status, response in op.get("responses", {}).items():
        parts.append(
            f"<tr><td>{escape(str(status))}</td><td>{escape(response.get('description', ''))}"
            f"</td><td>{_content_schema(response.get('content', {}))}</td></tr>"
        )
    parts.append("</table></div>")
    return "".join(parts)


def _schema(name: str, schema: dict[str, Any]) -> str:
    parts = [f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>']
    if schema.get("description"):
        parts.append(f"<p>{escape(schema['description'])}</p>")
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        parts.append("<table><tr><th>field</th><th>type</th><th>about</th></tr>")
        for field, spec in properties.items():
            mark = " (required)" if field in required else ""
            parts.append(
                f"<tr><td><code>{escape(field)}</code>{mark}</td><td>{_type_of(spec)}</td>"
                f"<td>{escape(spec.get('description', ''))}</td></tr>"
            )
        parts.append("</table>")
    return "".join(parts)


def render_docs(openapi: dict[str, Any]) -> str:
    """The reference page for an OpenAPI document."""
    info = openapi.get("info", {})
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{escape(info.get('title', 'API'))} API</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(info.get('title', 'API'))} API <small class=muted>"
        f"{escape(str(info.get('version', '')))}</small></h1>",
        f"<p>{escape(info.get('description', ''))}</p>",
        '<p>The machine-readable document: <a href="/openapi.json">/openapi.json</a>.</p>',
        "<h2>Endpoints</h2>",
    ]
    for path, item in openapi.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                parts.append(_operation(method, path, item[method]))
    parts.append("<h2>Schemas</h2>")
    for name, schema in openapi.get("components", {}).get("schemas", {}).items():
        parts.append(_schema(name, schema))
    parts.append("</body></html>")
    return "\n".join(parts)
