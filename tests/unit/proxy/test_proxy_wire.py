"""SSE encoding, error shape and the Prometheus text."""

from __future__ import annotations

import orjson

from vastllm.proxy.errors import ProxyError, error_json
from vastllm.proxy.metrics import Metrics
from vastllm.proxy.sse import encode_event, encode_events, error_event


def test_sse_event_encoding_golden():
    assert encode_event("ping", {"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert encode_events([("a", {"x": 1}), ("b", {})]) == (
        b'event: a\ndata: {"x":1}\n\nevent: b\ndata: {}\n\n'
    )


def test_sse_error_event_has_anthropic_shape():
    raw = error_event("overloaded_error", "busy")
    name, data = raw.decode().strip().split("\n")
    assert name == "event: error"
    assert orjson.loads(data[len("data: ") :]) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }


def test_error_statuses():
    assert ProxyError("overloaded_error", "x").status == 529
    assert ProxyError("request_too_large", "x").status == 413
    assert ProxyError("not_found_error", "x").status == 404
    assert orjson.loads(error_json("api_error", "m")) == {
        "type": "error",
        "error": {"type": "api_error", "message": "m"},
    }


def test_metrics_text():
    m = Metrics()
    m.record_request("messages", 200, 0.004)
    m.record_request("messages", 200, 0.3)
    m.record_cache("hit")
    m.record_cache("miss")
    m.record_cache("miss")
    m.record_cache("bypass")
    m.ttft.observe(0.02)
    m.record_tokens(10, 5)
    m.record_upstream_error("connect")
    text = m.render().decode()
    assert 'vastllm_requests_total{route="messages",status="200"} 2' in text
    assert 'vastllm_cache_requests_total{result="hit"} 1' in text
    assert "vastllm_cache_hit_ratio 0.333333" in text
    assert 'vastllm_request_duration_seconds_bucket{route="messages",le="0.005"} 1' in text
    assert 'vastllm_request_duration_seconds_bucket{route="messages",le="0.5"} 2' in text
    assert 'vastllm_request_duration_seconds_bucket{route="messages",le="+Inf"} 2' in text
    assert 'vastllm_time_to_first_token_seconds_bucket{le="0.025"} 1' in text
    assert "vastllm_input_tokens_total 10" in text
    assert 'vastllm_upstream_errors_total{kind="connect"} 1' in text
    assert text.endswith("\n")
