"""Property-based: every HTTP endpoint and CLI command, driven with generated input (empty, whitespace,
unicode, control characters, novels, NaN / negative / huge numbers), answers with a result or one clear
message, and the server's base weights stay bit-for-bit what they were."""

import io
import math
from contextlib import redirect_stderr, redirect_stdout

import pytest
from gradio_client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PROMPTS = ["The capital of Canada is", "The capital of Canada is [MASK] .", "Ottawa is the capital of"]
texts = st.one_of(
    st.sampled_from(PROMPTS + ["", "   ", "\t\n", "Canada", "[MASK]", "[MASK] [MASK]", "{}", "{X} }{", "Ωmega ☃ 日本",
                               "a\x00b", "line\x07bell", "The capital of Canada is " * 200]),
    st.text(max_size=40),
)
numbers = st.one_of(
    st.sampled_from([-1, 0, 1, 2, 3, 7, 10 ** 9, -(10 ** 12), 2.5, 1e300, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just(None),
)
models = st.sampled_from(["world-gpt", "world-gpt", "world-bert", "", "  ", "no-such-org/no-such-model",
                          "../../etc/passwd", "/tmp", "assets"])
SETTINGS = settings(max_examples=3, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def answer_or_clear_error(client, *args, api_name):
    try:
        client.predict(*args, api_name=api_name)
    except Exception as e:  # noqa: BLE001 - the message is what is tested
        msg = str(e)
        assert "Traceback" not in msg, msg
        assert "internal error" not in msg, f"{api_name}{args!r}: {msg}"
        assert msg.strip(), f"{api_name}{args!r}: an empty error"


@pytest.fixture(autouse=True)
def weights_unchanged_after(client):
    """After each test's examples (not each example: /status checksums every loaded model, the real one in
    1.4 s, and a corrupted weight stays corrupted), the server's base weights are bit for bit what they were."""
    yield
    status = client.predict(api_name="/status")
    assert all(m["unchanged"] for m in status["models"].values()), status


@SETTINGS
@given(model=models, prompt=texts, top=numbers)
def test_predict(client, model, prompt, top):
    answer_or_clear_error(client, model, prompt, top, api_name="/predict")


@SETTINGS
@given(model=models, prompt=texts, subject=texts, answer=texts, samples=numbers, window=numbers,
       noise=st.one_of(st.sampled_from(["3sd", "0", "-1", "nan", "inf", "sd", "1e400", ""]), st.text(max_size=5)),
       seed=numbers)
def test_trace(client, model, prompt, subject, answer, samples, window, noise, seed):
    answer_or_clear_error(client, model, prompt, subject, answer, samples, window, noise, seed, True, "noise", "",
                          "prob", api_name="/trace")


@SETTINGS
@given(model=models, prompt=texts, target=texts, steps=numbers,
       method=st.sampled_from(["ig", "activation", "", "IG", "gradient"]))
def test_attribute(client, model, prompt, target, steps, method):
    answer_or_clear_error(client, model, prompt, target, steps, method, api_name="/attribute")


@SETTINGS
@given(model=models, prompts=texts, target=texts, steps=numbers)
def test_neurons(client, model, prompts, target, steps):
    answer_or_clear_error(client, model, prompts, target, steps, api_name="/neurons")


@SETTINGS
@given(model=models, name=st.sampled_from(["determiner_noun_agreement_2", "anaphor_gender_agreement", "", "nope"]),
       n=numbers, steps=numbers)
def test_paradigm(client, model, name, n, steps):
    answer_or_clear_error(client, model, name, n, steps, api_name="/paradigm")


@SETTINGS
@given(model=models, method=st.sampled_from(["rome", "kn", "", "memit"]), prompt=texts, subject=texts,
       target=st.one_of(texts, st.sampled_from(["Rome", "New York", "Zorblaxia", "Ottawa"])), layer=numbers,
       then=st.sampled_from(["/undo", "/reset", None]))
def test_edit_undo_reset(client, model, method, prompt, subject, target, layer, then):
    answer_or_clear_error(client, model, method, prompt, subject, target, layer, api_name="/edit")
    if then:
        answer_or_clear_error(client, api_name=then)


@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(model=models, method=st.sampled_from(["rome", "kn", "x"]),
       relation=st.sampled_from(["P36", "P101", "P999", ""]), limit=st.sampled_from([-1, 0, 1, 10 ** 9, math.nan, 2.5]))
def test_evaluate(client, model, method, relation, limit):
    answer_or_clear_error(client, model, method, relation, limit, api_name="/evaluate")


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(model=models, prompt=texts, subject=texts, target=st.one_of(texts, st.sampled_from(["Rome", "Zorblaxia"])),
       layer=numbers)
def test_compare(client, model, prompt, subject, target, layer):
    answer_or_clear_error(client, model, prompt, subject, target, layer, api_name="/compare")


@pytest.mark.parametrize("args", [("world-gpt", "The capital of Canada is", "", "Rome", 1),
                                  ("world-gpt", "The capital of Canada is", "Canada", "Ottawa", 1),
                                  ("world-bert", "The capital of Canada is [MASK] .", "Canada", "Rome", 1),
                                  ("world-gpt", "The capital of Canada is", "Canada", "", 0)])
def test_sweep_bad_input(client, args):
    """A sweep edits every layer (minutes): its bad inputs, which must come back as one clear line."""
    answer_or_clear_error(client, *args, api_name="/sweep")


@pytest.mark.parametrize("model", ["world-gpt", "", "no-such-org/no-such-model"])
def test_edit_files(client, model, tmp_path):
    """Download with no edits, upload what is no edits file: each one clear line."""
    from gradio_client import handle_file
    answer_or_clear_error(client, model, api_name="/download_edits")
    for k, data in enumerate((b"", b"\x00" * 64, b"\xff" * 8 + b"{}")):
        junk = tmp_path / f"junk{k}.safetensors"
        junk.write_bytes(data)
        answer_or_clear_error(client, model, handle_file(str(junk)), api_name="/upload_edits")


def test_every_endpoint_is_fuzzed(client):
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    covered = {"/predict", "/trace", "/attribute", "/neurons", "/paradigm", "/edit", "/undo", "/reset", "/evaluate",
               "/status", "/compare", "/sweep", "/download_edits", "/upload_edits"} | {f"/lesson_{k}" for k in range(1, 8)}  # the lesson's steps take no input
    paper = {e for e in named if e.startswith("/paper_")}
    assert named - covered - paper == set(), f"endpoints without a fuzz test: {named - covered - paper}"
    for e in sorted(paper):  # each claim with bad sizes: a clear error, never a crash
        for n in (-1,):
            answer_or_clear_error(client, n, api_name=e)


# ---- the CLI, in process (the functions behind it are the same; a subprocess per example would be slow) ----

CLI_COMMANDS = st.one_of(
    st.tuples(st.just("predict"), texts, st.sampled_from(["--top", "--model"]), st.one_of(texts, st.just("-5"))),
    st.tuples(st.just("trace"), texts, st.just("--subject"), texts),
    st.tuples(st.just("attribute"), texts, st.just("--steps"), st.sampled_from(["0", "-3", "nan", "1e9", "x", "2"])),
    st.tuples(st.just("intervene"), texts, st.just("--neurons"), st.sampled_from(["5:1", "99:1", "a:b", "1", "-1:-1"])),
    st.tuples(st.just("edit"), st.sampled_from(["rome", "kn"]), texts, st.just("--subject"), texts, st.just("--target"),
              st.one_of(texts, st.just("Rome"))),
    st.tuples(st.just("evaluate"), st.just("--relation"), st.sampled_from(["P36", "P0", ""]), st.just("--limit"),
              st.sampled_from(["0", "-1", "x", "1"])),
    st.tuples(st.just("paradigm"), st.sampled_from(["", "nope", "anaphor_gender_agreement"]), st.just("--prompts"),
              st.sampled_from(["0", "1", "x", "3"])),
)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(argv=CLI_COMMANDS)
def test_cli_never_crashes(argv):
    from knlab.app.cli import main
    from knlab.serve.worker import default_worker
    loaded = set(default_worker().status()["models"])
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own errors: one line, status 2
            code = e.code
    assert code in (0, 2), (argv, code, err.getvalue())
    if code:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (argv, err.getvalue())
    status = default_worker().status()
    assert all(m["unchanged"] for m in status["models"].values())
    # the worker drops a model whose weights it could not restore: a model that vanished was corrupted
    assert loaded <= set(status["models"]), (argv, loaded - set(status["models"]))
