"""The page in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright against the system
browser, nothing downloaded) loads the page, picks an image, types a question, and sees the ranked passages and the
heatmap over the image; an empty query and a server error are shown in words."""
import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("the browser test needs Debian's chromium (`apt-get install chromium`, which `make test` does "
                    "when run as root); it is not installed here")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package "
                                                                  "(requirements-test.txt)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 900})
        page = context.new_page()
        yield page
        context.close()


def test_search_shows_ranked_passages_and_the_heatmap(browser_page, server, quick_demo, tmp_path):
    page = browser_page
    query = quick_demo.queries[0]
    image_path = quick_demo.out / "data" / "images" / query["image"]
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('health').textContent.includes('passages')")

    page.set_input_files("#image-input", str(image_path))
    assert page.is_visible("#preview")
    page.fill("#question", query["question"])
    page.fill("#k", "5")
    page.click("#search-button")

    page.wait_for_selector("#results li.result", timeout=60_000)
    items = page.locator("#results li.result")
    assert items.count() == 5
    assert [items.nth(i).locator(".rank").inner_text() for i in range(5)] == [f"#{r}" for r in range(1, 6)]
    first_id = items.nth(0).get_attribute("data-id")
    assert items.nth(0).locator(".text").inner_text() == quick_demo.passages[first_id]
    assert "score" in items.nth(0).locator(".score").inner_text()

    # the heatmap: shown over the image, toggled off and on, and per passage match
    page.wait_for_selector("#looked:not([hidden])", timeout=60_000)
    page.wait_for_function("(() => { const img = document.getElementById('heatmap-img');"
                           " return !img.hidden && img.complete && img.naturalWidth > 0; })()")
    assert page.get_attribute("#heatmap-img", "src").startswith("data:image/png;base64,")
    page.uncheck("#heatmap-toggle")
    assert not page.is_visible("#heatmap-img")
    page.check("#heatmap-toggle")
    assert page.is_visible("#heatmap-img")
    mean_src = page.get_attribute("#heatmap-img", "src")
    items.nth(0).locator("button.why").click()
    assert page.get_attribute("#heatmap-img", "src") != mean_src
    assert "pooled image regions" in page.inner_text("#shares")
    assert "selected" in items.nth(0).get_attribute("class")
    assert page.is_hidden("#error")
    screenshot = os.environ.get("MIRE_SERVE_SCREENSHOT") or str(tmp_path / "page.png")
    page.screenshot(path=screenshot, full_page=True)


def test_errors_are_shown_in_words(browser_page, server):
    page = browser_page
    page.goto(server.url + "/")
    page.fill("#question", "")
    page.click("#search-button")
    assert "Give an image, a question, or both." in page.inner_text("#error")

    # a file that is not an image is refused by the server; its reason is shown
    page.set_input_files("#image-input", files=[{"name": "fake.png", "mimeType": "image/png",
                                                  "buffer": b"this is not an image"}])
    page.click("#search-button")
    page.wait_for_selector("#error:not([hidden])")
    page.wait_for_function("document.getElementById('error').textContent.includes('not an image')")
    assert page.locator("#results li.result").count() == 0


def test_passage_images_are_shown_beside_their_passages(browser_page, image_passages_run, tmp_path):
    page = browser_page
    passages = image_passages_run.passages
    page.goto(image_passages_run.server.url + "/")
    page.wait_for_function("document.getElementById('health').textContent.includes('4 with images')")
    page.set_input_files("#image-input", files=[])
    page.fill("#question", "a red circle on a card")
    page.fill("#k", "6")
    page.click("#search-button")
    page.wait_for_selector("#results li.result", timeout=60_000)
    items = page.locator("#results li.result")
    assert items.count() == 6
    page.wait_for_function("[...document.querySelectorAll('#results img.passage-image')]"
                           ".every((img) => img.complete && img.naturalWidth > 0)")
    for i in range(6):
        item = items.nth(i)
        pid = item.get_attribute("data-id")
        picture = item.locator("img.passage-image")
        if passages[pid]["image"] is None:
            assert picture.count() == 0
            assert item.locator(".text").inner_text() == passages[pid]["text"]
        else:
            assert picture.count() == 1 and picture.get_attribute("src") == f"/passage-image/{pid}"
            assert page.evaluate("(img) => img.naturalWidth", picture.element_handle()) == 48
            shown = item.locator(".text").inner_text()
            assert shown == (passages[pid]["text"] or "(image only)")
    assert page.is_hidden("#error")
    page.screenshot(path=os.environ.get("MIRE_SERVE_IMAGES_SCREENSHOT") or str(tmp_path / "page.png"), full_page=True)
