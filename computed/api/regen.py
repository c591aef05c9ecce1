"""Regenerate computed/api/ from proto/computed/v1/*.proto: `python -m computed.api.regen`.

The proto files keep their canonical home and import paths
(`proto/computed/v1/agent.proto` imports `computed/v1/types.proto`), so the
descriptors that gRPC reflection serves and grpcurl reads are named as the
protos are. protoc would then emit Python modules as `computed.v1.*_pb2`, a
package that does not exist; the Python package for generated code is
`computed.api`. So protoc writes into a scratch dir and a post-processing
step moves the modules into computed/api/ and rewrites exactly three things:

- `from computed.v1 import x_pb2` -> `from computed.api import x_pb2` (.py and .pyi),
- the module name passed to `_builder.BuildTopDescriptorsAndMessages`
  (it becomes the message classes' `__module__`, which pickle and repr use),
- the file path quoted in the gRPC version-check error message.

Nothing else changes: protobuf package names (`computed.v1`), full message
names and descriptor file names stay as written in the protos. The output is
committed; tests/unit/test_api_generated.py fails when it is stale, and
`--check` does the same from the command line.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
PROTO_PACKAGE = "computed/v1"
API_DIR = Path(__file__).resolve().parent

_GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
_REWRITES = (
    (re.compile(r"^from computed\.v1 import ", re.M), "from computed.api import "),
    (
        re.compile(
            r"^(_builder\.BuildTopDescriptorsAndMessages\(DESCRIPTOR, )'computed\.v1\.", re.M
        ),
        r"\1'computed.api.",
    ),
    (re.compile(r"generated code in computed/v1/"), "generated code in computed/api/"),
)


class RegenError(RuntimeError):
    """protoc failed, or its output no longer looks like what the rewrites expect."""


def is_generated(path: Path) -> bool:
    return path.name.endswith(_GENERATED_SUFFIXES)


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Write the rewritten modules for every proto into `out_dir`; return their paths."""
    import grpc_tools  # a development dependency: imported only when regenerating
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = proto_files()
    if not protos:
        raise RegenError(f"no .proto files under {PROTO_ROOT / PROTO_PACKAGE}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="computed-regen-") as scratch:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        # Relative proto paths keep the scratch location out of the output.
        code = _run_in(PROTO_ROOT.parent, lambda: protoc.main(args))
        if code != 0:
            raise RegenError(f"protoc exited with status {code} (its message is above)")
        written = []
        for src in sorted((Path(scratch) / PROTO_PACKAGE).iterdir()):
            dst = out_dir / src.name
            dst.write_text(rewrite(src.read_text()))
            written.append(dst)
    return written


def rewrite(text: str) -> str:
    """Point a generated module's Python imports at computed.api (see module docstring)."""
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    if re.search(r"^(from|import) computed\.v1\b", text, re.M):
        raise RegenError("a `computed.v1` import survived the rewrite; update regen._REWRITES")
    return text


def differences(committed: Path, fresh: Path) -> list[str]:
    """Generated files that differ between two dirs, are missing, or are left over."""
    have = {p.name for p in committed.iterdir() if is_generated(p)}
    want = {p.name for p in fresh.iterdir() if is_generated(p)}
    problems = [f"missing: {name}" for name in sorted(want - have)]
    problems += [f"left over (no proto generates it): {name}" for name in sorted(have - want)]
    problems += [
        f"stale: {name}"
        for name in sorted(have & want)
        if not filecmp.cmp(committed / name, fresh / name, shallow=False)
    ]
    return problems


def regenerate(api_dir: Path = API_DIR) -> list[Path]:
    """Regenerate in place, removing generated modules whose proto is gone."""
    with tempfile.TemporaryDirectory(prefix="computed-api-") as fresh:
        written = generate(Path(fresh))
        names = {p.name for p in written}
        for old in api_dir.iterdir():
            if is_generated(old) and old.name not in names:
                old.unlink()
        for path in written:
            shutil.copyfile(path, api_dir / path.name)
    return [api_dir / name for name in sorted(names)]


def _run_in(cwd: Path, fn):  # type: ignore[no-untyped-def]
    import os

    before = os.getcwd()
    os.chdir(cwd)
    try:
        return fn()
    finally:
        os.chdir(before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m computed.api.regen", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed modules are stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory(prefix="computed-api-") as fresh:
            generate(Path(fresh))
            problems = differences(API_DIR, Path(fresh))
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("run: python -m computed.api.regen", file=sys.stderr)
        return 1 if problems else 0
    for path in regenerate():
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
