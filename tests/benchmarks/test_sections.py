"""benchmarks/sections.py: a benchmark run with --markdown rewrites its own section of docs/benchmarks.md and
nothing else, headed by the command line that measured it."""

import re

from helpers import REPO, benchmark

sections = benchmark("sections")

DOC = """# Benchmarks

Hand-written prose before.

## Causal tracing

<!-- begin bench_trace -->
Command: `python benchmarks/bench_trace.py --repeats 3` (old).

| a | b |
|---|---|
| 1 | 2 |
<!-- end bench_trace -->

Prose between sections, kept.

<!-- begin bench_kn -->
Command: `python benchmarks/bench_kn.py --big` (old).
<!-- end bench_kn -->
"""


def test_a_section_is_rewritten_and_everything_else_kept(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text(DOC)
    body = sections.table(["model", "speed-up"], [["world-gpt", "12.3x"]])
    sections.write_section(path, "bench_trace", body, command="python benchmarks/bench_trace.py --repeats 1",
                         when="2026-01-02")
    text = path.read_text()
    assert "(old)." in text.split("<!-- begin bench_kn -->")[1]  # the other section as it was
    assert "python benchmarks/bench_trace.py --repeats 3" not in text and "| 1 | 2 |" not in text
    trace = text.split("<!-- begin bench_trace -->")[1].split("<!-- end bench_trace -->")[0]
    assert trace.strip().startswith("Command: `python benchmarks/bench_trace.py --repeats 1` (2026-01-02; torch")
    assert "| world-gpt | 12.3x |" in trace
    before, after = DOC.split("<!-- begin bench_trace -->")[0], DOC.split("<!-- end bench_trace -->")[1]
    assert text.startswith(before) and text.endswith(after)  # the prose around it, byte for byte
    assert text.count("<!-- begin bench_trace -->") == text.count("<!-- end bench_trace -->") == 1
    sections.write_section(path, "bench_trace", "again", command="c", when="w")  # rewritten, not duplicated
    assert path.read_text().count("<!-- begin bench_trace -->") == 1 and "| world-gpt |" not in path.read_text()


def test_a_new_section_is_appended_and_a_new_file_created(tmp_path):
    path = tmp_path / "b.md"
    sections.write_section(path, "bench_edit:smollm2-135m", "figures", command="python benchmarks/bench_edit.py")
    sections.write_section(path, "bench_start", "more figures", command="python benchmarks/bench_start.py")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert text.index("<!-- begin bench_edit:smollm2-135m -->") < text.index("## bench_start") \
        < text.index("<!-- begin bench_start -->")
    assert "figures" in text and "more figures" in text


def test_a_body_with_backslashes_is_written_as_is(tmp_path):
    path = tmp_path / "b.md"
    path.write_text(DOC)
    sections.write_section(path, "bench_kn", r"a \1 and \n stay", command="c")
    assert r"a \1 and \n stay" in path.read_text()


def test_the_command_line_is_the_one_typed_from_the_repository_root():
    argv = [str(REPO / "benchmarks" / "bench_trace.py"), "--model", "smollm2-135m", "--markdown", "docs/benchmarks.md"]
    assert sections.command_line(argv) == ("python benchmarks/bench_trace.py --model smollm2-135m "
                                         "--markdown docs/benchmarks.md")
    assert sections.command_line(["benchmarks/bench_kn.py", "--models", "a b"]) == \
        "python benchmarks/bench_kn.py --models 'a b'"
    assert sections.section_name("benchmarks/bench_trace.py") == "bench_trace"
    assert sections.section_name("benchmarks/bench_trace.py", "smollm2-135m") == "bench_trace:smollm2-135m"


def test_a_table_cell_cannot_split_its_row():
    assert sections.table(["a"], [["x | y"]]).splitlines()[-1] == "| x / y |"


def test_docs_benchmarks_is_in_the_sectioned_format():
    """Every section of the record names the benchmark command that measured it, and every benchmark script
    takes --markdown."""
    text = (REPO / "docs" / "benchmarks.md").read_text()
    begins = re.findall(r"<!-- begin (\S+) -->\n(.*)", text)
    ends = re.findall(r"<!-- end (\S+) -->", text)
    assert begins and [n for n, _ in begins] == ends and len(set(ends)) == len(ends)
    for name, first in begins:
        script = name.split(":")[0]
        assert first.startswith(f"Command: `python benchmarks/{script}.py"), (name, first)
        assert (REPO / "benchmarks" / f"{script}.py").exists()
    for script in sorted((REPO / "benchmarks").glob("bench_*.py")):
        assert "sections.add_argument(ap)" in script.read_text(), script.name


def test_a_benchmark_writes_its_section(tmp_path):
    """The whole path on the cheapest benchmark (the load test's arguments and table, without the app):
    bench_load's report becomes a section headed by the command that ran."""
    bench_load = benchmark("bench_load")
    res = {"clients": 2, "seconds": 5, "served": 7, "errors": [], "violations": [], "unchanged": True,
           "latency": {"/predict": {"n": 6, "p50": 0.2, "p95": 0.5, "max": 0.6},
                       "/edit": {"n": 1, "p50": 2.0, "p95": 2.0, "max": 2.0}}}
    path = tmp_path / "b.md"
    sections.write_section(path, "bench_load", bench_load.markdown(res),
                         command=sections.command_line([bench_load.__file__, "--clients", "2"]))
    text = path.read_text()
    assert "Command: `python benchmarks/bench_load.py --clients 2`" in text
    assert "**0 errors, 0 isolation violations**" in text and "| /predict | 6 | 200 ms | 500 ms | 600 ms |" in text

