"""Check that splitting C files was a pure move: every top-level item of the old files (a
function, a declaration, a macro, a type, with the comment just before it) is in the new files
with the same text, modulo what a move may change: the storage class (`static`, `static
inline`, `extern`), the signature's line breaks and alignment, and the renames given (a
function that now crosses files gets a prefix; renamed in code only, never in comments).

    python scripts/c_move_check.py OLD.c ... -- NEW.c NEW.h ... [--rename old=new ...]
    git show main:edgebus/onestep.c > /tmp/onestep.c && python scripts/c_move_check.py \
        /tmp/onestep.c -- edgebus/onestep*.[ch] --rename Sender_vectorcall=onestep_Sender_vectorcall

Prints each item whose code differs (a unified diff), each whose code is the same but whose
leading comment differs, and the items only in the new files (include guards, pragmas); exits
1 when any code differs or an old item is missing. A split of edgebus/onestep.c (split29) is
the case it was written for: bench/results/split29.md.
"""

from __future__ import annotations

import difflib
import re
import sys

_COMMENT = re.compile(r"(/\*.*?\*/)", re.S)


def _scan(line: str, state: str, depth: int) -> tuple[str, int]:
    """The lexer state ("code", "block", "str", "chr") and brace/paren depth after `line`."""
    j = 0
    while j < len(line):
        c, two = line[j], line[j:j + 2]
        if state == "code":
            if two == "/*":
                state, j = "block", j + 2
                continue
            if two == "//":
                break
            if c == '"':
                state = "str"
            elif c == "'":
                state = "chr"
            elif c in "{(":
                depth += 1
            elif c in "})":
                depth -= 1
        elif state == "block":
            if two == "*/":
                state, j = "code", j + 2
                continue
        elif c == "\\":
            j += 2
            continue
        elif (c == '"' and state == "str") or (c == "'" and state == "chr"):
            state = "code"
        j += 1
    return state, depth


def items(text: str) -> list[tuple[str, str]]:
    """(name, text) of each top-level item, in order; a comment goes with the item after it."""
    out: list[tuple[str, str]] = []
    buf: list[str] = []
    state, depth = "code", 0
    for line in text.split("\n"):
        buf.append(line)
        state, depth = _scan(line, state, depth)
        if state != "code" or depth != 0:
            continue
        s = line.strip()
        if not any(x.strip() for x in buf):
            buf = []
            continue
        directive = buf[0].lstrip().startswith("#") or s.startswith("#")
        if s.endswith((";", "}")) or (directive and not s.endswith("\\")):
            item = "\n".join(buf).strip("\n")
            out.append((name_of(item), item))
            buf = []
    if any(x.strip() for x in buf):
        item = "\n".join(buf).strip("\n")
        out.append((name_of(item), item))
    return out


def code_of(item: str) -> str:
    """The item without the comments before it."""
    return re.sub(r"^(\s*/\*.*?\*/\s*\n)+", "", item, flags=re.S)


def name_of(item: str) -> str:
    """What an item defines: `f()` for a function, `#define X`, `typedef T`, or a variable."""
    code = _COMMENT.sub("", item).strip()
    m = re.match(r"#\s*(define|include|pragma|ifndef|endif)\s*(\S*)", code)
    if m:
        return f"#{m.group(1)} {m.group(2)}".rstrip()
    head = code.split("{")[0]
    if code.startswith("typedef"):
        m = re.search(r"}\s*(\w+)\s*;\s*$", code) or re.search(r"\(\s*\*\s*(\w+)\s*\)", code)
        return "typedef " + (m.group(1) if m else code[:30])
    m = re.search(r"(\w+)\s*\(", head) if "(" in head.split("=")[0] else None
    if m:
        return m.group(1) + "()"
    m = re.search(r"(\w+)\s*(\[\])?\s*=", code) or re.search(r"(\w+)\s*[,;]", code)
    return m.group(1) if m else code[:30]


def normalise(item: str, renames: dict[str, str]) -> str:
    """What a move may change, undone: renames in code (not comments), the storage class, the
    signature's whitespace."""
    parts = _COMMENT.split(item)  # code, comment, code, ...
    for k in range(0, len(parts), 2):
        for old, new in renames.items():
            parts[k] = re.sub(rf"\b{re.escape(old)}\b(?=\s*[(;])", new, parts[k])
    item = "".join(parts)
    item = re.sub(r"^(static inline |static |extern )", "", item, flags=re.M)
    code = code_of(item)
    head, brace, rest = code.partition("{")
    if "(" in head.split("=")[0]:
        code = re.sub(r"\s+", " ", head) + brace + rest
    return item[:len(item) - len(code_of(item))] + code


def main(argv: list[str]) -> int:
    renames: dict[str, str] = {}
    if "--rename" in argv:
        k = argv.index("--rename")
        renames = dict(kv.split("=", 1) for kv in argv[k + 1:])
        argv = argv[:k]
    sep = argv.index("--")
    old_files, new_files = argv[:sep], argv[sep + 1:]

    def load(files: list[str]) -> dict[str, list[tuple[str, str]]]:
        d: dict[str, list[tuple[str, str]]] = {}
        for f in files:
            with open(f, encoding="utf-8") as fh:
                for name, item in items(fh.read()):
                    d.setdefault(name, []).append((f, item))
        return d

    old, new = load(old_files), load(new_files)

    def renamed(name: str) -> str:
        return renames.get(name[:-2], name[:-2]) + "()" if name.endswith("()") else name

    same = differ = commented = 0
    for name, found in old.items():
        if renamed(name) not in new:
            print(f"MISSING from the new files: {name}")
            differ += 1
            continue
        got = [(f, normalise(t, {})) for f, t in new[renamed(name)]]
        for _, text in found:
            want = normalise(text, renames)
            where = [f for f, t in got if t == want]
            if where:
                same += 1
                continue
            where = [f for f, t in got if code_of(t) == code_of(want)]
            if where:
                commented += 1
                print(f"same code, its leading comment differs: {name} ({where[0]})")
                continue
            differ += 1
            print(f"CODE DIFFERS: {name}")
            closest = max((t for _, t in got), key=lambda t: difflib.SequenceMatcher(
                None, t, want).quick_ratio())  # the definition, not a prototype
            sys.stdout.writelines(difflib.unified_diff(
                (want + "\n").splitlines(True), (closest + "\n").splitlines(True), "old", "new", n=1))
    olds = {renamed(n) for n in old}
    for name, found in new.items():
        if name not in olds:
            print(f"only in the new files: {name} ({found[0][0]})")
    print(f"{same} items the same (modulo the renames), {commented} the same but for the comment "
          f"before them, {differ} different or missing")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
