#!/usr/bin/env python3
"""Every file a doc refers to exists in the repository.

Checks each tracked *.md (or the files given) for
  - Markdown links [text](target) that are not URLs or in-page anchors: the target, relative to
    the doc's folder (or to the repository root when it starts with '/'), must exist;
  - paths written in backticks or bare that start with a top-level folder of the repository
    (agent/, cli/, docs/, tests/, ...): relative to the root, they must exist. Paths with
    placeholders (<...>, *, $, {...}, ...) and paths under build/ are not checked.
Prints one line per missing file (doc:line: 'path' does not exist) and exits 1 if any.
"""
import os
import re
import subprocess
import sys

LINK = re.compile(r"\]\(([^)\s]+)\)")
# A repository path: a top-level folder, then path characters.
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./+-]*[\w+-])")
PLACEHOLDER = re.compile(r"[<>*${}]|\.\.\.|…|XXX|PID")


def repo_root():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.abspath(os.path.join(here, "..", ".."))


def tracked_docs(root):
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "*.md"], check=True,
                             capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        out = []
        for d, _, files in os.walk(root):
            if "/build" in d or "/." in d:
                continue
            out += [os.path.relpath(os.path.join(d, f), root) for f in files if f.endswith(".md")]
    # The checker's own fixtures are broken on purpose.
    return sorted(d for d in out if not d.startswith("tests/docs/fixtures/"))


def exists(root, path):
    """A file or folder, or a program built from a source of that name (bench/x from x.cc)."""
    full = os.path.join(root, path)
    return os.path.exists(full) or any(os.path.exists(full + ext)
                                       for ext in (".cc", ".c", ".py", ".sh"))


def check(root, doc):
    tops = sorted(e for e in os.listdir(root)
                  if os.path.isdir(os.path.join(root, e)) and not e.startswith(".")
                  and e != "build" and not e.startswith("build"))
    path_re = re.compile(PATH.pattern % "|".join(map(re.escape, tops)))
    missing = []
    with open(os.path.join(root, doc), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                    continue
                target = target.split("#", 1)[0]
                if not target or PLACEHOLDER.search(target):
                    continue
                base = root if target.startswith("/") else os.path.join(root, os.path.dirname(doc))
                if not os.path.exists(os.path.join(base, target.lstrip("/"))):
                    missing.append((n, target))
            for m in path_re.finditer(line):
                path = m.group(1).rstrip(".")
                rest = line[m.end():]
                if PLACEHOLDER.search(path) or rest.startswith(("*", "<", "{", "$", "…")):
                    continue
                if exists(root, path):
                    continue
                last = path.rsplit("/", 1)[-1]
                if "." not in last and last.isupper():
                    continue  # prose such as "daemon/CLI"
                missing.append((n, path))
    return missing


def main(argv):
    root = repo_root()
    docs = argv[1:] or tracked_docs(root)
    bad = 0
    for doc in docs:
        rel = os.path.relpath(os.path.abspath(doc), root) if os.path.isabs(doc) else doc
        for n, path in check(root, rel):
            print(f"{rel}:{n}: '{path}' does not exist in the repository")
            bad += 1
    if bad:
        print(f"{bad} reference(s) to missing files; fix the doc or add the file")
        return 1
    print(f"{len(docs)} docs checked, every file they name exists")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
