"""The clinician's page in a real browser: Debian's Chromium, driven by Selenium, against a live service.

The service runs on the bundled models (their input-validity check is what refuses the photo). Chromium is
told that no host but the service's exists (``--host-resolver-rules``), so a page that needed a CDN would show
it. With ``WEB_SCREENSHOT_DIR`` set, the answer and the model card are saved there as PNG (README's pictures).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.service.conftest import running_service

selenium = pytest.importorskip("selenium", reason="selenium is a dev dependency (pip install -e '.[dev]')")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
SLICE = "sartaj-brain-tumor-mri/Testing/meningioma_tumor/image(10).jpg"
WAIT_S = 60


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        message = "Chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs them: their absence is a failure there, not a skip
        pytest.skip(message)
    return browser, driver


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("web") / "stderr.log"
    # the Keras twins load before ready, so that no page waits for TensorFlow
    with running_service(REPO_ROOT / "models", log, {"MRI_GRADCAM_PRELOAD": "true"}) as base:
        yield base


@pytest.fixture(scope="module")
def browser(live: str) -> Iterator[WebDriver]:
    binary, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1400",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: WebDriver, condition: object, timeout: float = WAIT_S) -> object:
    return WebDriverWait(driver, timeout).until(condition)  # type: ignore[arg-type]


def _visible(driver: WebDriver, element_id: str) -> bool:
    return bool(driver.find_element(By.ID, element_id).is_displayed())


def _upload(driver: WebDriver, base: str, path: Path, gradcam: bool = True) -> None:
    driver.get(f"{base}/")
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#model-select option"))
    checkbox = driver.find_element(By.ID, "want-gradcam")
    if checkbox.is_selected() != gradcam:
        checkbox.click()
    driver.find_element(By.ID, "file-input").send_keys(str(path))
    _wait(driver, expected_conditions.element_to_be_clickable((By.ID, "submit")))
    driver.find_element(By.ID, "submit").click()
    _wait(driver, lambda d: _visible(d, "result") and not _visible(d, "busy"))


def _same_origin_only(driver: WebDriver, base: str, allowed: tuple[str, ...] = ()) -> None:
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [name for name in names if not name.startswith((base, "data:", "blob:", *allowed))]
    assert outside == [], outside


def _screenshot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("WEB_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


@pytest.mark.realdata
@pytest.mark.slow
def test_a_real_slice_gets_label_bars_and_a_heat_map(browser: WebDriver, live: str, data_root: Path) -> None:
    _upload(browser, live, data_root / SLICE)
    _wait(browser, lambda d: _visible(d, "heat"))
    label = browser.find_element(By.ID, "verdict-label").text
    assert label == "Model answer: meningioma"
    assert "confidence" in browser.find_element(By.ID, "verdict-confidence").text
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars tbody tr")
    assert sorted(bar.get_attribute("data-class") for bar in bars) == [
        "glioma", "meningioma", "no_tumor", "pituitary"
    ]  # fmt: skip
    assert not _visible(browser, "refusal") and _visible(browser, "disclaimer")
    overlay = browser.find_element(By.ID, "overlay-image")
    natural = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].complete]", overlay)
    assert natural[0] > 0 and natural[1] is True
    original = browser.find_element(By.ID, "original-image")
    assert browser.execute_script("return arguments[0].naturalWidth", original) == natural[0]
    _screenshot(browser, "answer.png")
    before = overlay.value_of_css_property("opacity")
    slider = browser.find_element(By.ID, "opacity")
    browser.execute_script("arguments[0].value = 15; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert before == "0.6" and overlay.value_of_css_property("opacity") == "0.15"
    browser.find_element(By.ID, "show-heat").click()
    assert not overlay.is_displayed()
    browser.find_element(By.ID, "show-heat").click()
    assert browser.find_element(By.ID, "download").get_attribute("href").startswith("data:image/png;base64,")
    _same_origin_only(browser, live)


@pytest.mark.slow
def test_a_photo_is_refused_without_a_label(browser: WebDriver, live: str, tmp_path: Path) -> None:
    from skimage import data

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    _upload(browser, live, photo, gradcam=False)
    assert _visible(browser, "refusal") and not _visible(browser, "answer")
    assert (
        browser.find_element(By.ID, "refusal-title").text == "Not a brain MRI slice: no tumour label is given"
    )
    assert "does not look like a brain MRI slice" in browser.find_element(By.ID, "refusal-text").text
    result = browser.find_element(By.ID, "result").text  # (the model chooser lists the classes)
    for label in ("glioma", "meningioma", "pituitary", "no_tumor", "Model answer", "confidence"):
        assert label not in result


@pytest.mark.slow
def test_a_dicom_gets_an_answer_and_no_patient_field_is_shown(browser: WebDriver, live: str) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = Path(str(get_testdata_file("MR_small.dcm")))
    dataset = pydicom.dcmread(path)
    _upload(browser, live, path)
    assert _visible(browser, "answer") or _visible(browser, "refusal")  # the API's answer, whichever it is
    page = browser.page_source
    for value in (str(dataset.PatientName), str(dataset.PatientID), "MR_small", "CompressedSamples"):
        assert value.strip() and value not in page
    assert "1 file chosen (DICOM" in browser.find_element(By.ID, "file-note").text


@pytest.mark.slow
def test_the_model_card_shows_figures_and_limits(browser: WebDriver, live: str) -> None:
    browser.get(f"{live}/ui/models/sartaj-4class")
    _wait(browser, lambda d: _visible(d, "card"))
    image = browser.find_element(By.ID, "confusion")
    _wait(browser, lambda d: d.execute_script("return arguments[0].naturalWidth", image) > 0, 30)
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Accuracy" in text and "Intended use and limits" in text and "temperature" in text
    rows = browser.find_elements(By.CSS_SELECTOR, "#per-class tbody tr")
    assert len(rows) == 4
    _same_origin_only(browser, live)
    _screenshot(browser, "model-card.png")


@pytest.mark.slow
def test_the_api_documentation_works_offline(browser: WebDriver, live: str) -> None:
    browser.get(f"{live}/docs")
    paths = _wait(
        browser,
        lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")] or None,
        60,
    )
    assert "/predict" in paths
    _same_origin_only(browser, live)
    browser.get(f"{live}/redoc")
    _wait(browser, lambda d: "Classify one brain MRI slice" in d.find_element(By.TAG_NAME, "body").text, 60)
    # ReDoc's bundle links its maker's logo (the "API docs by Redocly" badge) from their CDN: a cosmetic image
    # that stays blank offline; everything that renders the documentation came from the service
    _same_origin_only(browser, live, allowed=("https://cdn.redoc.ly/redoc/logo-mini.svg",))


def test_the_pages_carry_a_strict_content_security_policy(live: str) -> None:
    import httpx

    for path in ("/", "/ui/models/sartaj-4class"):
        answer = httpx.get(f"{live}{path}", timeout=10)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        policy = answer.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert np.frombuffer(httpx.get(f"{live}/ui/static/style.css", timeout=10).content, np.uint8).size > 0


@pytest.mark.realdata
@pytest.mark.slow
def test_the_page_fits_a_phone_and_works_from_the_keyboard(
    browser: WebDriver, live: str, data_root: Path
) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.set_window_size(390, 844)  # a phone held upright
    try:
        _upload(browser, live, data_root / SLICE)
        _wait(browser, lambda d: _visible(d, "heat"))
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than the phone"
        # the controls are reachable with Tab alone, in reading order
        browser.get(f"{live}/")
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model-select option"))
        body = browser.find_element(By.TAG_NAME, "body")
        reached = []
        for _ in range(8):
            body.send_keys(Keys.TAB) if not reached else browser.switch_to.active_element.send_keys(Keys.TAB)
            reached.append(browser.switch_to.active_element.get_attribute("id"))
        assert reached.index("drop-zone") < reached.index("model-select") < reached.index("want-gradcam")
    finally:
        browser.set_window_size(1280, 1400)
