#!/usr/bin/env python3
"""Fails on a broken link in the README, the guide (docs/guide/src) or a crate's README: a
relative link to a file that does not exist, or to a heading (`#anchor`) that the file does not
have. Links to the web are not followed (the machines that run the tests reach no web site).
Run by scripts/test.sh after `mdbook build`."""
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading):
    """The anchor GitHub and mdBook give a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def outside_code(text):
    """The text without its fenced blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path):
    text = open(path, encoding="utf-8").read()
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", outside_code(text), re.M)}


def main():
    files = [os.path.join(ROOT, "README.md")]
    files += sorted(glob.glob(os.path.join(ROOT, "docs", "guide", "src", "*.md")))
    files += sorted(glob.glob(os.path.join(ROOT, "crates", "*", "README.md")))
    broken = []
    for path in files:
        for target in LINK.findall(outside_code(open(path, encoding="utf-8").read())):
            if re.match(r"^[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            where = os.path.relpath(path, ROOT)
            if not os.path.exists(linked):
                broken.append(f"{where}: {target}: no such file")
            elif anchor and linked.endswith(".md") and anchor not in anchors(linked):
                broken.append(f"{where}: {target}: no heading #{anchor} in {os.path.relpath(linked, ROOT)}")
    for b in broken:
        print(f"FAIL: broken link: {b}", file=sys.stderr)
    if broken:
        sys.exit(1)
    print(f"links: {len(files)} pages, none broken")


if __name__ == "__main__":
    main()
