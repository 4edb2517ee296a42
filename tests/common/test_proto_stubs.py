"""The committed gRPC stubs match what the generator writes from proto/."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "generate_proto", ROOT / "scripts" / "generate_proto.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_proto_stubs_are_fresh(tmp_path):
    generator = _load_generator()

    fresh = {p.name: p.read_text() for p in generator.generate(tmp_path)}
    committed = {
        p.name: p.read_text() for p in (ROOT / "common" / "pb").iterdir() if p.is_file()
    }

    assert sorted(fresh) == sorted(committed), "run `make proto` and commit"
    for name, text in fresh.items():
        assert committed[name] == text, f"common/pb/{name} is stale: run `make proto`"
