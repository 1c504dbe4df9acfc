"""A real browser (Debian's chromium driven by Playwright) uses the app as a person would."""

import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a system test: ./run_tests.sh --fast leaves it out

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def click_until_visible(page, button: str, target: str, tries: int = 2, timeout: int = 60_000) -> None:
    """Click ``button`` until ``target`` shows; on failure, report what the page says (toasts included).
    A second click guards against a click that reaches the page before its event wiring (seen once in CI)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    for attempt in range(tries):
        page.locator(button).click()
        try:
            page.locator(target).wait_for(timeout=timeout)
            return
        except PlaywrightTimeout:
            continue
    pytest.fail(f"{target} never appeared after {tries} clicks on {button}; page says: "
                f"{page.locator('body').inner_text()[:1500]!r}")


def screenshot(page, name: str) -> None:
    out = Path(__file__).resolve().parents[2] / "build" / "screenshots"  # the repository's build/
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run ./run_tests.sh, which installs it")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                    env={"HOME": str(tmp_path_factory.mktemp("home"))})
        yield browser
        browser.close()


def new_page(browser, app_url):
    """A new visitor: a fresh page (and session) on the app."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page.goto(app_url, wait_until="domcontentloaded")
    return page


@pytest.fixture(scope="module")
def page(browser, app_url):
    page = new_page(browser, app_url)
    yield page
    page.close()


def no_error_shown(page) -> None:
    errors = page.locator(".toast-body.error")
    if errors.count():
        pytest.fail(f"the page shows an error: {errors.first.inner_text()!r}")


def download(page, name: str) -> Path:
    """Open ``name``'s take-away panel and download its first file (the result's JSON) as a user would."""
    page.locator(f"#{name}-takeaway").get_by_text("Take it away").click()
    link = page.locator(f"#{name}-files a").first
    link.wait_for(timeout=30_000)
    with page.expect_download() as info:
        link.click()
    return Path(info.value.path())


def test_the_lesson_opens_first_and_runs_a_step(page):
    """The page opens on the Lesson; its first step runs live on the lesson's model and draws its chart; its
    result downloads as JSON; the next step opens its tab filled in with the step's inputs."""
    import json

    from playwright.sync_api import expect

    from knlab.studies.lesson import FACTS, lesson_model
    expect(page.get_by_text("Where, if anywhere, does a language model keep its knowledge?").first).to_be_visible(
        timeout=60_000)
    click_until_visible(page, "#lesson-1-button", "#lesson-1-plot .js-plotly-plot", timeout=180_000)
    expect(page.locator("#lesson-1-status")).to_contain_text(f"Live ({lesson_model()})", timeout=30_000)
    screenshot(page, "lesson")
    data = json.loads(download(page, "lesson-1").read_text())
    assert data["step"] == 1 and data["model"] == lesson_model() and data["result"]["top"]
    expect(page.locator("#lesson-1-code")).to_contain_text("res = knows(lm)")
    prompt, subject, answer, _new = FACTS[lesson_model()]
    page.locator("#lesson-2-open").click()
    expect(page.locator("#trace-prompt textarea")).to_have_value(prompt, timeout=30_000)
    expect(page.locator("#trace-subject textarea")).to_have_value(subject)
    expect(page.get_by_label("Answer (empty: the clean top prediction)")).to_have_value(answer)
    expect(page.locator("#model input")).to_have_value(re.compile("^" + lesson_model()))  # its label follows
    assert page.locator("#trace-button").is_visible()  # the Trace tab is the one shown
    page.get_by_role("tab", name="Lesson").click()
    page.locator("#lesson-4-open").click()  # the edit step: ROME offered (the lesson's model is causal)
    expect(page.locator("#edit-target textarea")).to_have_value(FACTS[lesson_model()][3], timeout=30_000)
    expect(page.locator("#edit-method").get_by_label("rome")).to_be_checked()
    page.get_by_role("tab", name="Lesson").click()
    page.locator("#lesson-6-open").click()  # a Paper step opens its claim
    expect(page.locator("#paper-rome-syntax-button")).to_be_visible(timeout=30_000)
    no_error_shown(page)
    # back to the page's own model, as the tests below expect
    page.goto(page.url, wait_until="domcontentloaded")


def test_predict_tab_draws_the_chart(page):
    from playwright.sync_api import expect
    page.get_by_role("tab", name="Predict").click()
    box = page.locator("#predict-prompt textarea")
    box.wait_for(timeout=60_000)
    box.fill("The capital of France is")
    click_until_visible(page, "#predict-button", "#predict-plot .js-plotly-plot")
    expect(page.locator("#predict-plot")).to_contain_text("Paris", timeout=30_000)
    screenshot(page, "predict")


def test_bad_prompt_shows_a_message(page):
    from playwright.sync_api import expect
    box = page.locator("#predict-prompt textarea")
    box.fill("   ")
    page.locator("#predict-button").click()
    expect(page.get_by_text("the prompt is empty").first).to_be_visible(timeout=30_000)
    for close in page.locator(".toast-close").all():  # dismiss it: later screenshots show their own tab only
        close.click()


def test_trace_tab_draws_three_panels(page):
    from playwright.sync_api import expect
    page.get_by_role("tab", name="Trace").click()
    box = page.locator("#trace-prompt textarea")
    box.wait_for(timeout=30_000)
    box.fill("The Space Needle is in downtown")
    page.locator("#trace-subject textarea").fill("Space Needle")
    click_until_visible(page, "#trace-button", "#trace-plot .js-plotly-plot")
    expect(page.locator("#trace-plot")).to_contain_text("Restoring MLP outputs", timeout=30_000)
    expect(page.locator("#trace-plot")).to_contain_text("Needle*")
    expect(page.locator("#trace-status")).to_contain_text("clean")
    screenshot(page, "trace")


def test_attribute_tab_heatmap_and_suppression(page):
    from playwright.sync_api import expect
    page.get_by_role("tab", name="Attribute").click()
    box = page.locator("#attr-prompt textarea")
    box.wait_for(timeout=30_000)
    box.fill("The capital of France is")
    click_until_visible(page, "#attr-button", "#attr-overview .js-plotly-plot")
    expect(page.locator("#attr-overview")).to_contain_text("Paris", timeout=30_000)
    expect(page.locator("#attr-neurons textarea")).not_to_have_value("", timeout=30_000)
    page.locator("#attr-suppress").click()
    expect(page.locator("#attr-effect")).to_contain_text("p(target)", timeout=60_000)
    screenshot(page, "attribute")


def test_edit_tab_edits_undoes_and_other_tabs_see_the_edit(page):
    from playwright.sync_api import expect
    page.get_by_role("tab", name="Edit").click()
    box = page.locator("#edit-prompt textarea")
    box.wait_for(timeout=30_000)
    box.fill("The capital of Canada is")
    page.locator("#edit-subject textarea").fill("Canada")
    page.locator("#edit-target textarea").fill("Rome")
    click_until_visible(page, "#edit-button", "#edit-plot .js-plotly-plot", timeout=120_000)
    expect(page.locator("#edit-status")).to_contain_text("Ottawa → Rome", timeout=30_000)
    expect(page.locator("#edit-history")).to_contain_text("ROME L")
    screenshot(page, "edit")
    # the Predict tab now answers with this session's edit ...
    page.get_by_role("tab", name="Predict").click()
    page.locator("#predict-prompt textarea").fill("The capital of Canada is")
    page.locator("#predict-button").click()
    expect(page.locator("#predict-plot")).to_contain_text("Rome", timeout=60_000)
    # ... and no longer after undo
    page.get_by_role("tab", name="Edit").click()
    page.locator("#edit-undo").click()
    expect(page.locator("#edit-history")).to_contain_text("No edits", timeout=30_000)
    page.get_by_role("tab", name="Predict").click()
    page.locator("#predict-button").click()
    expect(page.locator("#predict-plot")).to_contain_text("Ottawa", timeout=60_000)


def test_paper_tab_reruns_a_claim(page):
    """The Paper tab: open a claim, rerun it live (overturn: BERT's experiment, so world-bert whatever the
    header says), and see the live figures beside the paper's, and the figure redrawn."""
    from playwright.sync_api import expect
    page.get_by_role("tab", name="Paper").click()
    page.locator("#paper-overturn").get_by_text("Suppressing the KNs rarely overturns").click()
    size = page.locator("#paper-size input")
    size.fill("2")
    click_until_visible(page, "#paper-overturn-button", "#paper-overturn-plot .js-plotly-plot", timeout=240_000)
    expect(page.locator("#paper-overturn-table")).to_contain_text("100.0 -> 94.8", timeout=30_000)
    expect(page.locator("#paper-overturn-status")).to_contain_text("world-bert")
    expect(page.locator("#paper-overturn-plot")).to_contain_text("(paper)")
    screenshot(page, "paper")


def test_the_real_model_from_the_model_list(page):
    """Last: it leaves the page on smollm2-135m. Choosing it brings its example; it answers Paris."""
    from playwright.sync_api import expect
    page.get_by_role("tab", name="Predict").click()
    model = page.locator("#model input")
    model.click()
    expect(page.get_by_text("a real pretrained LM").first).to_be_visible(timeout=30_000)  # labelled in the list
    model.fill("smollm2-135m")
    model.press("Enter")
    expect(page.locator("#predict-prompt textarea")).to_have_value("The capital of France is", timeout=30_000)
    click_until_visible(page, "#predict-button", "#predict-plot .js-plotly-plot", timeout=120_000)
    expect(page.locator("#predict-plot")).to_contain_text("Paris", timeout=60_000)
    expect(page.locator("#predict-plot")).to_contain_text("smollm2-135m")
    screenshot(page, "predict-smollm2")


@pytest.mark.parametrize("model", ["world-gpt", "world-bert", "smollm2-135m"])
def test_every_tab_answers_its_defaults(browser, app_url, model):
    """Section 1 of the teaching issue, as a new visitor: pick a shipped model in the header, then press every
    tab's main button with the inputs the tab now shows; each draws its result and no error is shown. On
    world-gpt the Edit tab's compare view runs too; on world-bert ROME is not offered, and says why. On the real
    model, the edit is this page's alone (another visitor meanwhile gets the base answer), and after the reset
    the base weights are back bit for bit."""
    from gradio_client import Client
    from playwright.sync_api import expect

    from knlab.app.defaults import defaults_for
    d = defaults_for(model)
    page = new_page(browser, app_url)
    try:
        expect(page.locator("#model input")).to_be_visible(timeout=60_000)
        page.locator("#model input").fill(model)
        page.locator("#model input").press("Enter")
        long = 300_000 if model == "smollm2-135m" else 120_000
        page.get_by_role("tab", name="Predict").click()
        expect(page.locator("#predict-prompt textarea")).to_have_value(d.prompt, timeout=30_000)
        expect(page.locator("#predict-tokens")).to_contain_text("token", timeout=30_000)
        click_until_visible(page, "#predict-button", "#predict-plot .js-plotly-plot")
        expect(page.locator("#predict-plot")).to_contain_text(model, timeout=30_000)

        page.get_by_role("tab", name="Trace").click()
        expect(page.locator("#trace-subject textarea")).to_have_value(d.subject, timeout=30_000)
        expect(page.locator("#trace-tokens")).to_contain_text("token", timeout=30_000)
        page.locator("#trace-button").click()
        expect(page.locator("#trace-status")).to_contain_text("Best hidden-state restore", timeout=long)

        page.get_by_role("tab", name="Attribute").click()
        expect(page.locator("#attr-tokens")).to_contain_text("token", timeout=30_000)
        click_until_visible(page, "#attr-button", "#attr-overview .js-plotly-plot", timeout=long)
        page.get_by_text("Paradigm: the paper's 24-modifier chart").click()
        expect(page.locator("#paradigm-name input")).to_have_value(d.paradigm, timeout=30_000)
        click_until_visible(page, "#paradigm-button", "#paradigm-plot .js-plotly-plot", timeout=long)

        page.get_by_role("tab", name="Edit").click()
        expect(page.locator("#edit-target textarea")).to_have_value(d.new_target, timeout=30_000)
        expect(page.locator("#edit-tokens")).to_contain_text("token", timeout=30_000)
        if "rome" not in d.edit_methods:
            expect(page.locator("#edit-method")).to_contain_text("ROME edits causal")
            assert page.locator("#edit-method").get_by_label("rome").count() == 0
        if model == "world-gpt":  # the compare view, once, on the base model (tests/app/test_app.py: its API)
            page.get_by_text("Compare: the same fact by KN edit and by ROME").click()
            page.locator("#compare-button").click()
            expect(page.locator("#compare-rome-status")).to_contain_text(f"→ {d.new_target}", timeout=long)
            expect(page.locator("#compare-kn-status")).not_to_be_empty()
        click_until_visible(page, "#edit-button", "#edit-plot .js-plotly-plot", timeout=long)
        expect(page.locator("#edit-status")).to_contain_text(f"→ {d.new_target}", timeout=30_000)
        if model == "smollm2-135m":  # the real model's ROME layer (its card's sweep), and the edit is this page's
            expect(page.locator("#edit-status")).to_contain_text("layer 5")
            other = Client(app_url, verbose=False)  # another visitor, through the HTTP API, meanwhile
            assert other.predict(model, d.prompt, 3, api_name="/predict")[1]["top"][0]["token"] == " Paris"
        page.locator("#edit-reset").click()
        expect(page.locator("#edit-history")).to_contain_text("No edits", timeout=30_000)
        status = Client(app_url, verbose=False).predict(api_name="/status")["models"][model]
        assert status["unchanged"] and status["checksum"] == status["base"]  # the base weights, bit for bit

        page.get_by_role("tab", name="Evaluate").click()
        click_until_visible(page, "#evaluate-button", "#evaluate-plot .js-plotly-plot", timeout=long)
        expect(page.locator("#evaluate-table")).to_contain_text("reliability", timeout=30_000)
        if d.edit_method == "rome":  # the paper publishes ROME's Table 1
            expect(page.locator("#evaluate-plot")).to_contain_text("published: GPT-2 XL")
        no_error_shown(page)
        screenshot(page, f"defaults-{model}")
    finally:
        page.close()
