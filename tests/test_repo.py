"""The repository keeps its promises to newcomers and hosts: README commands, CI, Dockerfile."""

import re

from conftest import REPO


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "pip install -r requirements.txt && python app.py" in readme
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
