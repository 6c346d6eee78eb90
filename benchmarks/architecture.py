"""The shape of the code, measured: what issue 20's "done when" counts, from the source itself.

Counted with Python's ``ast`` over ``src/siamkit``:

* lines (all, and code: neither blank, comment nor docstring) of ``index/`` +
  ``cli/`` and of the package;
* classes over 400 lines and functions over 60 lines (``def`` to its last line);
* imports of another subpackage's private module or private name (a module
  or name starting with ``_``; the top-level ``siamkit._*`` helpers are the
  package's shared internals and are not counted);
* import cycles between subpackages (an import anywhere in a module, lazy
  ones included, counts as a dependency; ``TYPE_CHECKING`` ones do not).

Writes ``benchmarks/results/architecture.json`` and ``.md``.

Usage::

    python benchmarks/architecture.py
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import tokenize
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT.parent / "src" / "siamkit"
RESULTS = ROOT / "results"
CLASS_LIMIT, FUNCTION_LIMIT, INDEX_CLI_LIMIT = 400, 60, 5000


def code_lines(source: str, tree: ast.Module) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                              tokenize.DEDENT, tokenize.ENDMARKER):  # fmt: skip
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def subpackage(module: str) -> str | None:
    """``siamkit.index.stores.base`` -> ``index``; top-level modules -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in SUBPACKAGES) else None


SUBPACKAGES = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}


def imports(tree: ast.Module, module: str) -> list[tuple[str, list[str]]]:
    """Every ``siamkit`` module imported (absolute or relative) and the names taken.

    Imports under ``if TYPE_CHECKING:`` are left out: they never run.
    """
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("siamkit")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            if base.startswith("siamkit"):
                found.append((base, [a.name for a in node.names]))
    return found


def measure() -> dict[str, Any]:
    """Every figure, as JSON."""
    lines: dict[str, tuple[int, int]] = {}
    classes, functions, private, edges = [], [], [], defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        rel = path.relative_to(PACKAGE).as_posix()
        module = "siamkit." + rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        lines[rel] = (len(source.splitlines()), code_lines(source, tree))
        for node in ast.walk(tree):
            size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and size > CLASS_LIMIT:
                classes.append({"where": f"{rel}:{node.name}", "lines": size})
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > FUNCTION_LIMIT:
                functions.append({"where": f"{rel}:{node.name}", "lines": size})
        own = subpackage(module)
        for target, names in imports(tree, module):
            theirs = subpackage(target)
            if theirs is None or theirs == own:
                continue
            if own is not None:
                edges[own].add(theirs)
            hidden = [p for p in target.split(".")[2:] if p.startswith("_")]
            hidden += [n for n in names if n.startswith("_") and not n.startswith("__")]
            if hidden:
                private.append({"where": rel, "imports": target, "private": hidden})
    index_cli = [v for k, v in lines.items() if k.startswith(("index/", "cli/"))]
    return {
        "lines": {
            "package": sum(v[0] for v in lines.values()),
            "package_code": sum(v[1] for v in lines.values()),
            "index_and_cli": sum(v[0] for v in index_cli),
            "index_and_cli_code": sum(v[1] for v in index_cli),
        },
        "classes_over_limit": sorted(classes, key=lambda c: -c["lines"]),
        "functions_over_limit": sorted(functions, key=lambda f: -f["lines"]),
        "private_imports": private,
        "cycles": cycles({k: sorted(v) for k, v in edges.items()}),
        "limits": {"class": CLASS_LIMIT, "function": FUNCTION_LIMIT, "index_cli": INDEX_CLI_LIMIT},
    }


def cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Each pair of subpackages that import each other, and longer loops, found by DFS."""
    found: set[tuple[str, ...]] = set()

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in edges.get(node, []):
            if nxt == start:
                loop = path[path.index(min(path)) :] + path[: path.index(min(path))]
                found.add(tuple(loop))
            elif nxt not in path and len(path) < 6:
                walk(start, nxt, [*path, nxt])

    for start in edges:
        walk(start, start, [start])
    return [list(c) for c in sorted(found)]


def markdown(report: dict[str, Any]) -> str:
    lines = report["lines"]
    out = [
        "# Architecture figures",
        "",
        "`python benchmarks/architecture.py` (counted with `ast` over `src/siamkit`).",
        "",
        f"- package: {lines['package']:,} lines ({lines['package_code']:,} code)",
        # issue 20's limit counts all lines: its "7,000 today" was 37% of the package's 19.0k
        f"- `index/` + `cli/`: {lines['index_and_cli']:,} lines (limit {INDEX_CLI_LIMIT:,}; "
        f"{lines['index_and_cli_code']:,} of them code)",
        f"- classes over {CLASS_LIMIT} lines: {len(report['classes_over_limit'])}",
        *(f"  - `{c['where']}`: {c['lines']}" for c in report["classes_over_limit"]),
        f"- functions over {FUNCTION_LIMIT} lines: {len(report['functions_over_limit'])}",
        *(f"  - `{f['where']}`: {f['lines']}" for f in report["functions_over_limit"]),
        f"- imports of another subpackage's private module or name: "
        f"{len(report['private_imports'])}",
        *(
            f"  - `{p['where']}` imports `{p['imports']}` ({', '.join(p['private'])})"
            for p in report["private_imports"]
        ),
        f"- import cycles between subpackages: {len(report['cycles'])}",
        *(f"  - {' -> '.join([*c, c[0]])}" for c in report["cycles"]),
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report = measure()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "architecture.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "architecture.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
