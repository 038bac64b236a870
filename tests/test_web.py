"""The web chat page at `/`, driven in headless Chromium: type a request, see the call, the hotels and the reply."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from bot_support import LiveServer, ScriptedPolicy, SwitchPolicy, streaming_server
from tooltune.bot import SessionConfig
from tooltune.bot.server import ServerConfig, create_app
from tooltune.dialogue import Assistant, Call, Result, User

# Found through PATH (Debian's chromium / chromium-driver, Ubuntu's chromium-browser, or a Chrome install).
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
ARGS = {"type": "经济型", "rating_range_lower": 4.5}


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip(f"Chromium or its driver not on PATH (browser: {CHROMIUM}, chromedriver: {DRIVER}): "
                    f"apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    profile = tempfile.mkdtemp(prefix="tooltune-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + (f"--user-data-dir={profile}",):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def say(driver, text: str, count: int) -> None:
    """Type `text`, send it, wait until the log holds `count` replies or errors."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()
    WebDriverWait(driver, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log .reply, #log .error"))
                                    >= count)


def test_page_shows_call_hotels_reply_and_keeps_the_conversation(browser, db):
    from selenium.webdriver.common.by import By

    switch = SwitchPolicy()
    switch.inner = policy = ScriptedPolicy([Call(ARGS), Assistant("推荐第一家。"), Call({"type": "六星级"}),
                                            Assistant("没有这种类型。")])
    with LiveServer(create_app(switch, db, ServerConfig(session=SessionConfig(limit=3)))) as url:
        browser.get(url + "/")
        say(browser, "找一家评分4.5以上的经济型酒店", 1)
        call = browser.find_element(By.CSS_SELECTOR, "#log .call")
        assert call.text.startswith('search_hotels {"type":"经济型","rating_range_lower":4.5}')
        records = db.search(ARGS, limit=3).records
        rows = call.find_elements(By.CSS_SELECTOR, "table.hotels tr")
        assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows[1:]] == [h["name"] for h in records]
        assert browser.find_element(By.CSS_SELECTOR, "#log .reply").text == "推荐第一家。"

        say(browser, "要六星级的", 2)  # a failing search is shown, and the conversation went back to the server
        assert "search failed: type:" in browser.find_element(By.CSS_SELECTOR, "#log .error").text
        assert browser.find_elements(By.CSS_SELECTOR, "#log .reply")[-1].text == "没有这种类型。"
        assert policy.histories[2][:4] == (User("找一家评分4.5以上的经济型酒店"), Call(ARGS), Result(records),
                                          Assistant("推荐第一家。"))

        browser.find_element(By.ID, "reset").click()
        assert browser.find_elements(By.CSS_SELECTOR, "#log > div") == []


def test_page_shows_server_errors(browser, db):
    from selenium.webdriver.common.by import By

    class Boom:
        def next_turn(self, history, options=None):
            raise RuntimeError("model exploded")

    with LiveServer(create_app(Boom(), db, ServerConfig(api_key="k"))) as url:
        browser.get(url + "/")
        say(browser, "你好", 1)
        assert "error 401" in browser.find_element(By.CSS_SELECTOR, "#log .error").text
        browser.find_element(By.ID, "key").send_keys("k")
        say(browser, "你好", 2)
        assert "error 500: generation failed: RuntimeError: model exploded" in \
            browser.find_elements(By.CSS_SELECTOR, "#log .error")[-1].text


def test_feedback_in_the_page_is_stored_and_kept_across_a_reload(browser, db, tmp_path):
    """Thumbs on the reply, an edit of the call (the form built from the tool's schema) and of the reply; after a
    reload the page shows the same and the conversation goes on; the store holds all of it."""
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tooltune.feedback import FeedbackStore, read_conversations

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    switch = SwitchPolicy()
    switch.inner = ScriptedPolicy([Call(ARGS), Assistant("推荐第一家。"), Assistant("不客气。")])
    config = ServerConfig(model_name="tiny", run="runs/tiny", session=SessionConfig(limit=3))
    wait = WebDriverWait(browser, 20)

    def chosen(selector: str) -> bool:
        return "chosen" in browser.find_element(By.CSS_SELECTOR, selector).get_attribute("class")

    try:
        with LiveServer(create_app(switch, db, config, feedback=store)) as url:
            browser.get(url + "/")
            say(browser, "找一家评分4.5以上的经济型酒店", 1)
            assert browser.find_element(By.CSS_SELECTOR, "#log .reply .text").text == "推荐第一家。"
            assert browser.find_element(By.ID, "privacy").is_displayed()
            browser.find_element(By.CSS_SELECTOR, "#log .reply button.bad").click()
            wait.until(lambda d: chosen("#log .reply button.bad"))
            browser.find_element(By.CSS_SELECTOR, "#log .reply button.good").click()  # changed my mind
            wait.until(lambda d: chosen("#log .reply button.good") and not chosen("#log .reply button.bad"))

            call = browser.find_element(By.CSS_SELECTOR, "#log .call")
            call.find_element(By.CSS_SELECTOR, "button.edit").click()
            form = call.find_element(By.CSS_SELECTOR, "form.fix")
            assert form.find_element(By.NAME, "rating_range_lower").get_attribute("value") == "4.5"  # pre-filled
            assert Select(form.find_element(By.NAME, "type")).first_selected_option.text == "经济型"
            assert [o.text for o in Select(form.find_element(By.NAME, "type")).options] == \
                ["(none)", "豪华型", "经济型", "舒适型", "高档型"]  # the schema's enum
            Select(form.find_element(By.NAME, "type")).select_by_visible_text("舒适型")
            form.find_element(By.NAME, "facilities").send_keys("免费WiFi、无烟房")
            form.find_element(By.CSS_SELECTOR, "button.save").click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#log .call .fixed"))
            fixed = {"type": "舒适型", "facilities": ["免费WiFi", "无烟房"], "rating_range_lower": 4.5}
            shown = browser.find_element(By.CSS_SELECTOR, "#log .call .fixed").text
            assert json.loads(shown.removeprefix("corrected: ")) == fixed

            reply = browser.find_element(By.CSS_SELECTOR, "#log .reply")
            reply.find_element(By.CSS_SELECTOR, "button.edit").click()
            area = reply.find_element(By.CSS_SELECTOR, "form.fix textarea")
            assert area.get_attribute("value") == "推荐第一家。"
            area.clear()
            area.send_keys("为您找到三家舒适型酒店。")
            reply.find_element(By.CSS_SELECTOR, "form.fix button.save").click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#log .reply .fixed"))

            browser.refresh()  # the page keeps its log, its feedback and its conversation
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#log .reply"))
            assert chosen("#log .reply button.good") and not chosen("#log .reply button.bad")
            assert browser.find_element(By.CSS_SELECTOR, "#log .call .fixed").text == shown
            assert browser.find_element(By.CSS_SELECTOR, "#log .reply .fixed").text == "corrected: 为您找到三家舒适型酒店。"
            say(browser, "谢谢", 2)
            assert browser.find_elements(By.CSS_SELECTOR, "#log .reply .text")[-1].text == "不客气。"

        store.flush()
        (conv,) = read_conversations(store.path)
        records = db.search(ARGS, limit=3).records
        assert [s.turn for s in conv.turns] == [User("找一家评分4.5以上的经济型酒店"), Call(ARGS), Result(records),
                                                Assistant("推荐第一家。"), User("谢谢"), Assistant("不客气。")]
        call, reply = conv.turns[1], conv.turns[3]
        assert (call.rating, call.correction) == (None, Call(fixed))
        assert (reply.rating, reply.correction) == ("good", Assistant("为您找到三家舒适型酒店。"))
        assert conv.source == "web" and {s.run for s in conv.turns if s.completion} == {"runs/tiny"}
    finally:
        store.close()


def test_page_shows_the_reply_as_its_tokens_arrive(browser, db):
    """A real Generator over a scripted model paused mid-reply: the page already shows the start of the reply."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    reply = "为您推荐北京的一家豪华型酒店，评分很高。"
    model, app = streaming_server(db, Assistant(reply), pause_at=12)
    with LiveServer(app) as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "input").send_keys("找酒店")
        browser.find_element(By.ID, "send").click()
        live = WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#partial.reply-live"))
        shown = live[0].text
        assert model.paused.is_set() and shown and reply.startswith(shown) and shown != reply
        model.go.set()
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#log .reply"))
        assert browser.find_element(By.CSS_SELECTOR, "#log .reply .text").text == reply
        assert not browser.find_elements(By.ID, "partial")
