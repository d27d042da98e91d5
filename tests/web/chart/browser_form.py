"""Filling a chart form as a browser would: what the page preselects, plus what the test types or picks."""

from __future__ import annotations

from html.parser import HTMLParser

from fastapi.testclient import TestClient
from httpx import Response


class Pick:
    """Choose the first option of a select whose label contains ``text`` (ids differ per database)."""

    def __init__(self, text: str) -> None:
        self.text = text


class _FormPage(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.options: dict[str, list[tuple[str, str]]] = {}
        self._select: str | None = None
        self._option: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and a.get("name") and a.get("type") not in ("checkbox", "radio"):
            self.values[a["name"]] = a.get("value", "")
        elif tag == "select":
            self._select = a.get("name")
            self.options[self._select or ""] = []
        elif tag == "option" and self._select:
            self._option = a.get("value", "")
            if "selected" in a:
                self.values[self._select] = self._option

    def handle_data(self, data: str) -> None:
        if self._select and self._option is not None:
            self.options[self._select].append((self._option, data))
            self._option = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def fill(client: TestClient, url: str, task: str | None = None, **fields: str | Pick | bool) -> Response:
    """GET the form at ``url``, fill it in, and POST it back (redirects not followed)."""
    page = client.get(url, params={"task": task} if task else None)
    assert page.status_code == 200, page.text
    parsed = _FormPage()
    parsed.feed(page.text)
    data = dict(parsed.values)
    for name, value in fields.items():
        if isinstance(value, Pick):
            found = [v for v, label in parsed.options.get(name, []) if value.text.lower() in label.lower() and v]
            assert found, f"no option like {value.text!r} for {name}: {parsed.options.get(name)}"
            data[name] = found[0]
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        else:
            data[name] = value
    return client.post(url, data=data, follow_redirects=False)


def form_values(html: str) -> dict[str, str]:
    """The values a browser would post from the page's inputs and selected options (hidden fields too)."""
    parsed = _FormPage()
    parsed.feed(html)
    return dict(parsed.values)
