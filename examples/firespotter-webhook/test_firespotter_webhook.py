import http.server
import json
import threading

import pytest

from firespotter.pdk.testing import SinkContract

import firespotter_webhook


@pytest.fixture
def endpoint():
    """A real HTTP server on 127.0.0.1 that keeps what it receives."""
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fire", received
    server.shutdown()


class TestWebhookSink(SinkContract):
    @pytest.fixture
    def sink(self, endpoint):
        url, self.received = endpoint
        return firespotter_webhook.WebhookSink(firespotter_webhook.WebhookOptions(url=url, only_fire=False))

    def delivered(self, sink):
        return [event["seq"] for event in self.received]


def test_endpoint_down_keeps_events_and_flush_says_so():
    sink = firespotter_webhook.WebhookSink(
        firespotter_webhook.WebhookOptions(url="http://127.0.0.1:9/none", only_fire=False, retries=0, timeout_s=0.2))
    from firespotter.pdk.testing import make_result

    sink.send(make_result(0))
    assert len(sink.backlog) == 1
    with pytest.raises(ConnectionError, match="1 events could not be delivered"):
        sink.flush()


def test_replay_posts_fire_events(run_pipeline, endpoint):
    url, received = endpoint
    results, _ = run_pipeline(source="test://?frames=6&size=96x96&seed=2",
                              sinks=[{"type": "webhook", "url": url, "only_fire": False}])
    assert [e["seq"] for e in received] == [r.seq for r in results] == list(range(6))
