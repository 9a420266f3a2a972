"""The typed stub ``python/ferrocorn/_native.pyi`` names only what the native module has: every
function, class and method it declares exists in the built ``ferrocorn._native``."""

import ast
from pathlib import Path

import ferrocorn._native as native

STUB = Path(__file__).resolve().parent.parent / "python" / "ferrocorn" / "_native.pyi"


def _declared():
    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            yield node.name, []
        elif isinstance(node, ast.ClassDef):
            methods = [n.name for n in node.body if isinstance(n, ast.FunctionDef)]
            yield node.name, methods


def test_every_stubbed_name_exists_in_the_native_module():
    missing = []
    for name, methods in _declared():
        obj = getattr(native, name, None)
        if obj is None:
            missing.append(name)
            continue
        missing += [f"{name}.{m}" for m in methods if not hasattr(obj, m)]
    assert not missing, f"declared in _native.pyi but not in ferrocorn._native: {missing}"


def test_the_stub_covers_the_loop_glue_classes():
    names = {name for name, _ in _declared()}
    assert {"LoopBridge", "AsgiRequest", "WebSocketSession", "HubJob", "IoStarter", "log"} <= names
