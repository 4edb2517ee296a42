"""Generate the Python gRPC stubs in common/pb from proto/fedcdr/v1/*.proto.

Run it (or `make proto`) after changing a .proto file and commit the result;
tests/common/test_proto_stubs.py fails while the committed stubs are stale.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("fedcdr") / "v1"
OUTPUT_DIR = ROOT / "common" / "pb"

# protoc writes `from fedcdr.v1 import x_pb2`; the stubs live in common.pb instead.
_IMPORT = re.compile(r"^from fedcdr\.v1 import (\w+) as (\w+)$", re.MULTILINE)


def generate(output_dir: Path) -> list[Path]:
    """Write the stubs of every proto file into ``output_dir`` and return them."""
    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    with tempfile.TemporaryDirectory() as scratch:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                f"--grpc_python_out={scratch}",
                *(str(p) for p in protos),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}")
        output_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for source in sorted((Path(scratch) / PACKAGE_DIR).iterdir()):
            text = _IMPORT.sub(r"from common.pb import \1 as \2", source.read_text())
            target = output_dir / source.name
            target.write_text(text)
            written.append(target)
    init = output_dir / "__init__.py"
    init.write_text(
        '"""Generated gRPC stubs; written by scripts/generate_proto.py."""\n'
    )
    return [init, *written]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR)
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
