"""benchmarks/browser.py's Page speaks to the real app as a browser's page does: it reads the config from the HTML,
runs the page's load events, gets each click's answer on the session's event stream (opened again when the server
closed it between clicks), keeps a session's edits its own, and turns the server's error into PageError."""

import pytest

from helpers import benchmark

pytestmark = pytest.mark.slow  # a system test: it starts the app


def test_a_page_opens_clicks_and_keeps_its_session(app_url):
    browser = benchmark("browser")
    page, other = browser.Page(app_url), browser.Page(app_url)
    try:
        assert page.config["dependencies"] and page.loaded_in is not None  # the token previews ran (examples: off)
        first = page.click("/predict", "world-gpt", "The capital of Canada is", 3)
        assert first.data[1]["top"][0]["token"].strip() == "Ottawa"
        assert first.stages["process_completed"] >= first.queued >= 0
        # the server closed the stream after the first answer; the second click opens it again
        again = page.click("/predict", "world-gpt", "The capital of France is", 3)
        assert again.data[1]["top"][0]["token"].strip() == "Paris"
        # an edit is the page's session's own
        edited = page.click("/edit", "world-gpt", "kn", "The capital of Canada is", "Canada", "Rome", None, "dai",
                            "first-token")
        assert edited.data[6]["new"] == "Rome" and len(edited.data[6]["history"]) == 1
        mine = page.click("/predict", "world-gpt", "The capital of Canada is", 3).data[1]
        theirs = other.click("/predict", "world-gpt", "The capital of Canada is", 3).data[1]
        assert theirs == first.data[1] and mine != theirs
        page.click("/reset")
        with pytest.raises(browser.PageError, match="takes 3 inputs"):
            page.click("/predict", "world-gpt")
        with pytest.raises(browser.PageError, match="prompt") as refused:  # the server's own message, one line
            page.click("/predict", "world-gpt", "   ", 3)
        assert "\n" not in str(refused.value) and "Traceback" not in str(refused.value)
    finally:
        page.close()
        other.close()
