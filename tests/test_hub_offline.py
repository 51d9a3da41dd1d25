"""Loading from the Hugging Face Hub through huggingface_hub's own client, against a Hub-like HTTP server on
loopback that serves a shipped model folder: a full download, a download cut in the middle, a server
that never answers, a closed port, and offline mode."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from promptrl import PromptDT
from promptrl.common.hub import HUB_TIMEOUT_ENV, HubUnreachableError

SHIPPED = Path(__file__).resolve().parents[1] / "hub_models" / "mw-reach" / "plm"
REPO = "someone/mw-reach-plm"
SHA = "0123456789abcdef0123456789abcdef01234567"


class HubHandler(http.server.BaseHTTPRequestHandler):
    """Answers the requests huggingface_hub makes for ``snapshot_download``: the repo's revision info, its
    file tree and the files (HEAD for metadata, GET for the bytes); ``server.cut`` names files whose
    body is cut after half its bytes."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # the test reads server.requests instead
        pass

    def _files(self) -> dict[str, bytes]:
        root = self.server.root
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool = False) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _route(self, head: bool) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        path = self.path.split("?")[0]
        files = self._files()
        if path in (f"/api/models/{REPO}/revision/main", f"/api/models/{REPO}"):
            body = json.dumps({"id": REPO, "sha": SHA, "siblings": [{"rfilename": n} for n in files]}).encode()
            return self._send(200, body, {"Content-Type": "application/json"}, head)
        if path == f"/api/models/{REPO}/tree/{SHA}":
            tree = [
                {"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for n, b in files.items()
            ]
            return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, head)
        prefix = f"/{REPO}/resolve/"
        if path.startswith(prefix):
            revision, _, name = path[len(prefix) :].partition("/")
            if revision not in ("main", SHA) or name not in files:
                return self._send(404, b"{}", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": SHA}, head)
            body = files[name]
            headers = {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}
            if head or name not in self.server.cut:
                return self._send(200, body, headers, head)
            self.send_response(200)  # announces every byte, sends half, then hangs up
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"}, head)

    def do_GET(self):
        self._route(head=False)

    def do_HEAD(self):
        self._route(head=True)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    server.requests, server.cut, server.root = [], set(), SHIPPED
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)
    yield server
    server.shutdown()
    server.server_close()


def same_weights(a: PromptDT, b: PromptDT) -> bool:
    sa, sb = a.network.state_dict(), b.network.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_download_runs_the_hub_client_end_to_end(hub, tmp_path):
    cache = tmp_path / "cache"
    model = PromptDT.from_pretrained(REPO, cache_dir=cache)
    assert same_weights(model, PromptDT.from_pretrained(SHIPPED))
    assert f"GET /api/models/{REPO}/revision/main" in hub.requests
    assert any(r.startswith(f"GET /{REPO}/resolve/{SHA}/model.safetensors") for r in hub.requests)
    # cached: loads offline (no request), and with the server gone
    hub.requests.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        assert same_weights(PromptDT.from_pretrained(REPO, cache_dir=cache), model)
    assert hub.requests == []
    hub.shutdown()
    hub.server_close()
    start = time.monotonic()
    assert same_weights(PromptDT.from_pretrained(REPO, cache_dir=cache), model)
    assert time.monotonic() - start < 2.0


def test_cut_download_leaves_nothing_that_loads(hub, tmp_path):
    cache = tmp_path / "cache"
    hub.cut = {"model.safetensors"}
    with pytest.raises(HubUnreachableError, match="could not be fetched.*downloading .* failed"):
        PromptDT.from_pretrained(REPO, cache_dir=cache)
    assert not list(cache.glob("**/*.incomplete"))  # no partial file kept
    assert not list(cache.glob("**/snapshots/*/model.safetensors"))  # and no snapshot that looks complete
    with pytest.raises(HubUnreachableError, match="offline mode is on"):  # offline: nothing cached to load
        PromptDT.from_pretrained(REPO, cache_dir=cache, local_files_only=True)
    hub.cut = set()  # the server recovers: a later call downloads the whole file
    assert same_weights(PromptDT.from_pretrained(REPO, cache_dir=cache), PromptDT.from_pretrained(SHIPPED))


def test_offline_fails_fast_without_any_request(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub was imported
    start = time.monotonic()
    with pytest.raises(HubUnreachableError) as err:
        PromptDT.from_pretrained(REPO, cache_dir=tmp_path / "cache")
    assert time.monotonic() - start < 2.0
    assert hub.requests == []
    message = str(err.value)
    assert f"pretrained_model_name_or_path='{REPO}' is not a folder" in message
    assert str(tmp_path / REPO) in message  # the local folder looked at
    assert "offline mode is on" in message and "hub_models/mw-reach/plm" in message  # and the shipped models


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_closed_port_fails_fast(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    with pytest.raises(
        HubUnreachableError, match=r"did not answer \(ConnectError.*shipped models: .*hub_models/mw-reach"
    ):
        PromptDT.from_pretrained(REPO, cache_dir=tmp_path / "cache")
    assert time.monotonic() - start < 2.0


def test_silent_server_times_out(tmp_path, monkeypatch):
    listener = socket.socket()  # accepts connections (the backlog) and never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setenv(HUB_TIMEOUT_ENV, "1")
        start = time.monotonic()
        with pytest.raises(HubUnreachableError, match="did not answer .*the limit is 1 s"):
            PromptDT.from_pretrained(REPO, cache_dir=tmp_path / "cache")
        assert time.monotonic() - start < 2.0
    finally:
        listener.close()


def test_bad_timeout_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv(HUB_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=f"{HUB_TIMEOUT_ENV} must be a positive number of seconds, got 'soon'"):
        PromptDT.from_pretrained(REPO, cache_dir=tmp_path / "cache")


def test_task_generators_download_with_their_model(hub, tmp_path):
    """A Prompt Diffuser that serves further tasks from ``tasks/<t>/`` arrives whole from the Hub."""
    from conftest import make_tiny_hub

    from promptrl import PromptDiffuser

    folder = make_tiny_hub(tmp_path / "made", "mw-reach", [6, 9]) / "mw-reach"
    pd = PromptDiffuser.from_pretrained(folder)  # learned task 6
    pd.add_task_generator(9, PromptDiffuser.from_pretrained(folder / "pretrained", plm=pd.plm))  # learned task 9
    pd.save_pretrained(tmp_path / "bundle")
    hub.root = tmp_path / "bundle"
    loaded = PromptDiffuser.from_pretrained(REPO, cache_dir=tmp_path / "cache")
    assert loaded.served_tasks() == [6, 9]
    assert any(r.startswith(f"GET /{REPO}/resolve/{SHA}/tasks/9/model.safetensors") for r in hub.requests)
    pd.set_random_seed(1)
    loaded.set_random_seed(1)
    for a, b in zip(pd.generate_prompt(2, task=9), loaded.generate_prompt(2, task=9)):
        assert all(torch.equal(a[k], b[k]) for k in a)
