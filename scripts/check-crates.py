#!/usr/bin/env python3
"""Checks that each library crate is ready for crates.io beyond what `cargo package` checks:
its manifest names what a registry page and docs.rs need, it ships a README, a CHANGELOG and
both license texts, it pins no exact version without a reason written above the line, and no
dependency it builds with (as locked) needs a newer Rust than the MSRV it states.

Run by scripts/test.sh after `cargo package`; exits non-zero naming every problem."""
import json
import os
import re
import subprocess
import sys

LIBS = ["sse-notify-core", "sse-notify-broker", "sse-notify-axum", "leptos-sse-notify"]
FIELDS = ["description", "license", "readme", "documentation", "keywords", "categories", "rust_version"]


def version(text):
    return tuple(int(x) for x in (text or "0").split(".")[:3]) + (0,) * (3 - len((text or "0").split(".")[:3]))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--locked"], cwd=root))
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    problems = []
    for lib in LIBS:
        pkg = next(p for p in meta["packages"] if p["name"] == lib)
        folder = os.path.dirname(pkg["manifest_path"])
        for field in FIELDS:
            if not pkg.get(field):
                problems.append(f"{lib}: no `{field.replace('_', '-')}` in its Cargo.toml")
        if "rs" not in ((pkg.get("metadata") or {}).get("docs") or {}):
            problems.append(f"{lib}: no [package.metadata.docs.rs] (which features docs.rs builds)")
        for name in ["README.md", "CHANGELOG.md", "LICENSE-MIT", "LICENSE-APACHE"]:
            if not os.path.isfile(os.path.join(folder, name)):
                problems.append(f"{lib}: no {name}")
        # An exact requirement forces its version on every app: only with a reason above it.
        lines = open(pkg["manifest_path"]).read().splitlines()
        for i, line in enumerate(lines):
            if re.search(r'=\s*"=\d|version\s*=\s*"=\d', line) and not (i > 0 and lines[i - 1].lstrip().startswith("#")):
                problems.append(f"{lib}: an exact version without a reason above it: {line.strip()}")
        for dep in pkg["dependencies"]:
            if dep["req"].startswith("=") and dep["kind"] is None:
                problems.append(f"{lib}: depends on {dep['name']} {dep['req']} exactly: every app would be held to it")
        # Every dependency it builds with (normal and build, on any target, all features as
        # locked) must build with the MSRV it states.
        msrv = version(pkg["rust_version"])
        seen, todo = set(), [pkg["id"]]
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            for dep in nodes[node]["deps"]:
                if any(k["kind"] in (None, "build") for k in dep["dep_kinds"]):
                    todo.append(dep["pkg"])
        for node in seen:
            needs = packages[node].get("rust_version")
            if needs and version(needs) > msrv:
                p = packages[node]
                problems.append(f"{lib}: {p['name']} {p['version']} needs Rust {needs}, above the stated {pkg['rust_version']}")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"crates ready: {', '.join(LIBS)} (manifests, README, CHANGELOG, licenses, no unexplained exact pins, dependencies within the MSRV)")


if __name__ == "__main__":
    main()
