"""webhook: POST every result with fire (or every result, `only_fire = false`) as JSON to a URL.

A worked example of a third-party sink: options validated by pydantic, the contract's SinkBase (delivery counters
in `stats()`), retries with backoff, a bounded
in-memory backlog so a slow endpoint costs memory up to a limit and never blocks the pipeline, and `flush()`
that delivers everything accepted (the conformance suite checks it).

    [[sinks]]
    type = "webhook"
    url = "http://127.0.0.1:8080/fire"
"""

from __future__ import annotations

import collections
import json
import time
import urllib.error
import urllib.request

from pydantic import BaseModel, ConfigDict, Field

from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.protocols import SinkBase
from firespotter.runtime.specs import SinkSpec


class WebhookOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^https?://")
    only_fire: bool = True
    timeout_s: float = Field(2.0, gt=0)
    retries: int = Field(3, ge=0, le=10)
    backlog: int = Field(1000, ge=1, description="events kept while the endpoint is down; the oldest go first")


class WebhookSink(SinkBase):  # SinkBase: needs_image = False, start(info) and outbox_depth() as defaults
    def __init__(self, options: WebhookOptions, name: str = "webhook"):
        self.name = name
        self.options = options
        self.backlog: collections.deque[dict] = collections.deque(maxlen=options.backlog)
        self.posted = 0
        self.failed_posts = 0

    def _post(self, event: dict) -> bool:
        body = json.dumps(event).encode()
        request = urllib.request.Request(self.options.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        delay = 0.1
        for attempt in range(self.options.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                    if 200 <= response.status < 300:
                        self.posted += 1
                        return True
            except (urllib.error.URLError, OSError):
                pass
            if attempt < self.options.retries:
                time.sleep(delay)
                delay *= 2
        self.failed_posts += 1
        return False

    def send(self, result) -> None:
        if self.options.only_fire and not result.regions:
            return
        self.backlog.append(result.as_event())
        self._drain()

    def _drain(self) -> None:
        while self.backlog:
            if not self._post(self.backlog[0]):
                return  # keep it; the next send or flush tries again
            self.backlog.popleft()

    def flush(self) -> None:
        self._drain()
        if self.backlog:
            raise ConnectionError(f"{len(self.backlog)} events could not be delivered to {self.options.url}")

    def stats(self) -> dict:
        """In the run's summary as sinks.<name>.delivery."""
        return {"posted": self.posted, "failed_posts": self.failed_posts, "backlog": len(self.backlog)}

    def close(self) -> None:
        pass  # urllib keeps no connection open; what flush() could not deliver was reported there


@hookimpl
def register_sinks():
    return [SinkSpec("webhook", lambda options, name="webhook": WebhookSink(options, name),
                     "POST fire events as JSON to an HTTP endpoint", options_model=WebhookOptions)]
