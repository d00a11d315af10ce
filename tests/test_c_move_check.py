"""scripts/c_move_check.py, the check that splitting a C file moved its code without changing it
(split29: edgebus/onestep.c): it passes a pure move (the storage class, the signature's
alignment and renames of functions that cross files allowed) and fails on any change of code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "c_move_check.py"

OLD = """\
#include <stdint.h>

/* The sum of a and b. */
static int add(int a,
               int b) {
    return a + b; /* add(a, b) in a comment stays as it is */
}

static int twice(int a) { return add(a, a); }

static long counter = 0;
"""

HEADER = """\
#include <stdint.h>

extern long counter;

int eb_add(int a, int b);
"""

ADD = """\
#include "x.h"

/* The sum of a and b. */
int eb_add(int a, int b) {
    return a + b; /* add(a, b) in a comment stays as it is */
}
"""

TWICE = """\
#include "x.h"

static inline int twice(int a) { return eb_add(a, a); }

long counter = 0;
"""


def _check(tmp_path: Path, add: str, twice: str = TWICE) -> subprocess.CompletedProcess[str]:
    for name, text in (("old.c", OLD), ("x.h", HEADER), ("add.c", add), ("twice.c", twice)):
        (tmp_path / name).write_text(text)
    return subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "old.c"), "--",
                           str(tmp_path / "x.h"), str(tmp_path / "add.c"), str(tmp_path / "twice.c"),
                           "--rename", "add=eb_add"],
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_pure_move_passes(tmp_path: Path) -> None:
    r = _check(tmp_path, ADD)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 different or missing" in r.stdout
    assert "CODE DIFFERS" not in r.stdout


def test_a_changed_body_fails_and_is_shown(tmp_path: Path) -> None:
    r = _check(tmp_path, ADD.replace("return a + b;", "return a - b;"))
    assert r.returncode == 1
    assert "CODE DIFFERS: add()" in r.stdout
    assert "-    return a + b;" in r.stdout and "+    return a - b;" in r.stdout


def test_a_rename_in_a_comment_is_a_change(tmp_path: Path) -> None:
    # renames apply to code only: a comment rewritten by the rename is not the old text
    r = _check(tmp_path, ADD.replace("add(a, b) in a comment", "eb_add(a, b) in a comment"))
    assert r.returncode == 1
    assert "add()" in r.stdout


def test_a_missing_item_fails(tmp_path: Path) -> None:
    r = _check(tmp_path, ADD, TWICE.replace("static inline int twice(int a) { return eb_add(a, a); }\n", ""))
    assert r.returncode == 1
    assert "MISSING from the new files: twice()" in r.stdout
