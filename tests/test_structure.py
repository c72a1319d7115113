"""The house rules that keep the code readable, checked on the source: small modules, short job
functions, no private names across modules, every job behind one contract."""
import ast
import dataclasses
import importlib
import pathlib

import pytest

from r1jax import pipeline

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("r1jax/**/*.py"), *ROOT.glob("kernels/*.py"),
                  *ROOT.glob("launch/*.py")])
MAX_MODULE_LINES = 400
MAX_JOB_FUNCTION_LINES = 80


def _tree(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _module_name(path):
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in SOURCES
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules by what they hold: {long}"


def test_no_function_in_a_job_module_is_over_80_lines():
    long = []
    for module in set(pipeline.JOBS.values()):
        path = ROOT / (module.replace(".", "/") + ".py")
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_JOB_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, long


def _private_uses(path):
    """``from m import _x`` and ``alias._x`` where ``alias`` is an imported r1jax/kernels module."""
    tree = _tree(path)
    modules = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in ("r1jax", "kernels"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports "
                                 f"{node.module}.{alias.name}")
                else:
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("r1jax", "kernels"):
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                not node.attr.startswith("__") and isinstance(node.value, ast.Name) and \
                node.value.id in modules:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses "
                         f"{modules[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_is_used_across_modules():
    found = [use for path in SOURCES for use in _private_uses(path)]
    assert not found, found


def test_the_checker_finds_a_private_name(tmp_path):
    path = ROOT / "tests" / "_private_probe.py"
    try:
        path.write_text("from r1jax.rl import trainer\nfrom r1jax.x import _y\ntrainer._z\n")
        assert len(_private_uses(path)) == 2
    finally:
        path.unlink()


@pytest.mark.parametrize("job", sorted(pipeline.JOBS))
def test_every_job_is_a_module_with_a_run_config_and_run(job):
    module = importlib.import_module(pipeline.JOBS[job])
    assert dataclasses.is_dataclass(module.RunConfig), job
    assert dataclasses.fields(module.RunConfig)[0].name == "job", job
    assert callable(module.run), job
    with pytest.raises(ValueError, match="job must be"):  # a config for another job is refused
        module.RunConfig(**{f.name: None for f in dataclasses.fields(module.RunConfig)
                            if f.default is dataclasses.MISSING and
                            f.default_factory is dataclasses.MISSING} | {"job": "other"})
