"""Many clients update one resource at once with If-Match, over real HTTP: exactly one wins each version and
no update is lost (every version in the history is the one its winner sent)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

CLIENTS = 8
WINS_EACH = 3  # each client keeps trying until it has won this many versions
MAX_TRIES = 60


def test_if_match_updates_from_many_clients_win_once_per_version_and_lose_nothing(live_server: str) -> None:
    created = httpx.post(f"{live_server}/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "v1"}]})
    assert created.status_code == 201
    pid = created.json()["id"]
    url = f"{live_server}/fhir/Patient/{pid}"
    winners: dict[int, str] = {}  # version -> the family name its winner sent
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(n: int) -> None:
        with httpx.Client(timeout=30) as http:
            start.wait()  # everyone at once
            wins = 0
            for attempt in range(MAX_TRIES):
                if wins == WINS_EACH:
                    return
                current = http.get(url)
                version = int(current.json()["meta"]["versionId"])
                family = f"client{n}-try{attempt}"
                answer = http.put(
                    url,
                    json={"resourceType": "Patient", "id": pid, "name": [{"family": family}]},
                    headers={"If-Match": f'W/"{version}"'},
                )
                with lock:
                    statuses.append(answer.status_code)
                    if answer.status_code == 200:
                        won = int(answer.json()["meta"]["versionId"])
                        assert won == version + 1
                        assert won not in winners, f"version {won} was won twice"
                        winners[won] = family
                        wins += 1

    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(client, n) for n in range(CLIENTS)]:
            future.result()

    assert set(statuses) <= {200, 409, 412}, statuses  # losers are told so; nothing fails on the server
    assert len(winners) == CLIENTS * WINS_EACH  # every client got its wins in the end
    final = httpx.get(url).json()
    assert int(final["meta"]["versionId"]) == 1 + len(winners)  # one version per win: none lost, none extra
    assert sorted(winners) == list(range(2, 2 + len(winners)))
    history = httpx.get(f"{url}/_history", params={"_count": 1000}).json()
    stored = {int(e["resource"]["meta"]["versionId"]): e["resource"]["name"][0]["family"] for e in history["entry"]}
    assert stored == {1: "v1", **winners}  # each version holds what its winner sent
