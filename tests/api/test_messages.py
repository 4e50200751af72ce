"""Posting messages: whole replies, SSE streams, policy escalations and LLM failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from parley.llm import LLMError, LLMErrorKind
from tests.api.helpers import make_conversation, make_goal, parse_sse
from tests.conftest import app_client, make_settings
from tests.support.providers import ScriptedProvider


def _post(client: TestClient, conversation_id: str, content: str, **extra: object):  # type: ignore[no-untyped-def]
    return client.post(
        f"/v1/conversations/{conversation_id}/messages", json={"content": content, **extra}
    )


def _messages(client: TestClient, conversation_id: str) -> list[tuple[str, str]]:
    body = client.get(f"/v1/conversations/{conversation_id}").json()
    return [(m["role"], m["content"]) for m in body["messages"]]


def test_message_gets_a_stored_reply_with_usage(client: TestClient) -> None:
    make_goal(client)
    conversation_id = make_conversation(client)
    response = _post(client, conversation_id, "Where is my order?")
    assert response.status_code == 200
    turn = response.json()
    assert turn["user_message"]["content"] == "Where is my order?"
    reply = turn["reply"]
    assert reply["role"] == "assistant"
    assert "Where is my order" in reply["content"]
    usage = reply["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert turn["conversation"]["status"] == "active"
    assert turn["conversation"]["turns"] == 1
    assert _messages(client, conversation_id)[1] == ("assistant", reply["content"])


def test_goal_instructions_and_history_reach_the_llm(tmp_path: Path) -> None:
    """The system prompt is the goal's instructions, followed by the whole history."""
    provider = ScriptedProvider(["first reply", "second reply"])
    with app_client(make_settings(tmp_path), provider) as client:
        make_goal(client)
        conversation_id = make_conversation(client)
        _post(client, conversation_id, "one")
        _post(client, conversation_id, "two")
    last = provider.calls[-1]
    assert [(m.role.value, m.content) for m in last.messages] == [
        ("system", "Help customers with orders."),
        ("user", "one"),
        ("assistant", "first reply"),
        ("user", "two"),
    ]
    assert last.model == "llama-3.1-8b-instant"


def test_stream_true_streams_tokens_then_the_stored_message(client: TestClient) -> None:
    make_goal(client)
    conversation_id = make_conversation(client)
    response = _post(client, conversation_id, "Stream please", stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "accepted"
    assert kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"token"}
    done = events[-1][1]
    streamed = "".join(data["content"] for kind, data in events if kind == "token")
    assert done["content"] == streamed
    assert done["usage"]["completion_tokens"] == len(kinds) - 2
    assert _messages(client, conversation_id)[-1] == ("assistant", streamed)


def test_accept_event_stream_header_also_streams(client: TestClient) -> None:
    make_goal(client)
    conversation_id = make_conversation(client)
    response = client.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": "hi"},
        headers={"Accept": "text/event-stream"},
    )
    assert parse_sse(response.text)[-1][0] == "done"


def test_trigger_phrase_escalates_without_asking_the_llm(tmp_path: Path) -> None:
    provider = ScriptedProvider()
    with app_client(make_settings(tmp_path), provider) as client:
        make_goal(client, trigger_phrases=["lawyer"])
        conversation_id = make_conversation(client)
        turn = _post(client, conversation_id, "I want my LAWYER now").json()
        assert turn["reply"] is None
        assert turn["escalation_reason"] == "trigger_phrase"
        assert turn["conversation"]["status"] == "escalated"
        assert _messages(client, conversation_id) == [("user", "I want my LAWYER now")]
    assert provider.calls == []


def test_streamed_trigger_phrase_sends_an_escalated_event(client: TestClient) -> None:
    make_goal(client)
    conversation_id = make_conversation(client)
    events = parse_sse(_post(client, conversation_id, "get me a human", stream=True).text)
    assert [kind for kind, _ in events] == ["accepted", "escalated"]
    assert events[1][1] == {"reason": "trigger_phrase"}


def test_max_turns_escalates_the_turn_after_the_last_allowed(client: TestClient) -> None:
    make_goal(client, max_turns=2)
    conversation_id = make_conversation(client)
    assert _post(client, conversation_id, "one").json()["reply"] is not None
    assert _post(client, conversation_id, "two").json()["reply"] is not None
    third = _post(client, conversation_id, "three").json()
    assert third["escalation_reason"] == "max_turns"
    assert third["reply"] is None
    assert _messages(client, conversation_id)[-1] == ("user", "three")


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        (LLMErrorKind.SERVER_ERROR, 502, "llm_server_error"),
        (LLMErrorKind.RATE_LIMITED, 503, "llm_rate_limited"),
        (LLMErrorKind.TIMEOUT, 504, "llm_timeout"),
        (LLMErrorKind.AUTH, 502, "llm_auth"),
    ],
)
def test_one_llm_failure_keeps_the_message_and_leaves_the_conversation_usable(
    tmp_path: Path, kind: LLMErrorKind, status: int, code: str
) -> None:
    """After retries the client gets a clear error; the user's message is kept, and a single
    failure (say, a wrong GROQ_BASE_URL during setup) does not escalate."""
    provider = ScriptedProvider([LLMError(kind, "scripted")] * 3)
    with app_client(make_settings(tmp_path, llm_max_retries=2), provider) as client:
        make_goal(client)
        conversation_id = make_conversation(client)
        response = _post(client, conversation_id, "are you there?")
        assert response.status_code == status
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("upstream_error", code)
        assert error["details"] == [{"escalated": False}]
        assert _messages(client, conversation_id) == [("user", "are you there?")]
        assert client.get(f"/v1/conversations/{conversation_id}").json()["status"] == "active"
        provider.steps.clear()  # the LLM is back (non-retryable kinds used one step only)
        assert _post(client, conversation_id, "now?").status_code == 200


def test_consecutive_llm_failures_escalate_at_the_policy_limit(tmp_path: Path) -> None:
    """``max_llm_failures`` failed turns in a row escalate; a success in between resets."""
    down = LLMError(LLMErrorKind.SERVER_ERROR, "down")
    provider = ScriptedProvider([down, "back", down, down, down])
    with app_client(make_settings(tmp_path, llm_max_retries=0), provider) as client:
        make_goal(client, max_llm_failures=3)
        conversation_id = make_conversation(client)
        codes = [_post(client, conversation_id, f"m{i}").status_code for i in range(4)]
        assert codes == [502, 200, 502, 502]
        assert client.get(f"/v1/conversations/{conversation_id}").json()["status"] == "active"
        last = _post(client, conversation_id, "m4")
        assert last.status_code == 502
        assert last.json()["error"]["details"] == [{"escalated": True}]
        conversation = client.get(f"/v1/conversations/{conversation_id}").json()
        assert conversation["status"] == "escalated"
        assert conversation["escalation"]["reason"] == "llm_failure"


def test_llm_failure_without_escalation_policy_leaves_the_conversation_active(
    tmp_path: Path,
) -> None:
    provider = ScriptedProvider(
        [LLMError(LLMErrorKind.SERVER_ERROR, "down")],
    )
    with app_client(make_settings(tmp_path, llm_max_retries=0), provider) as client:
        make_goal(client, on_llm_failure=False)
        conversation_id = make_conversation(client)
        response = _post(client, conversation_id, "hello?")
        assert response.status_code == 502
        assert response.json()["error"]["details"] == [{"escalated": False}]
        assert client.get(f"/v1/conversations/{conversation_id}").json()["status"] == "active"
        # The conversation goes on once the LLM is back.
        retry = _post(client, conversation_id, "hello again?")
        assert retry.status_code == 200
        assert [role for role, _ in _messages(client, conversation_id)] == [
            "user",
            "user",
            "assistant",
        ]


def test_stream_cut_midway_sends_an_error_event_and_stores_no_partial_reply(
    tmp_path: Path,
) -> None:
    provider = ScriptedProvider(
        ["alpha beta gamma"],
        mid_stream=LLMError(LLMErrorKind.STREAM_INTERRUPTED, "cut"),
        fail_after=2,
    )
    with app_client(make_settings(tmp_path), provider) as client:
        make_goal(client)
        conversation_id = make_conversation(client)
        events = parse_sse(_post(client, conversation_id, "go", stream=True).text)
        kinds = [kind for kind, _ in events]
        assert kinds == ["accepted", "token", "token", "error"]
        error = events[3][1]
        assert error["error"]["code"] == "llm_stream_interrupted"
        assert error["status"] == 502
        assert _messages(client, conversation_id) == [("user", "go")]


def test_oversized_content_is_refused_and_not_stored(tmp_path: Path) -> None:
    with app_client(make_settings(tmp_path, max_message_chars=10)) as client:
        make_goal(client)
        conversation_id = make_conversation(client)
        response = _post(client, conversation_id, "x" * 11)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "content_too_large"
        assert _messages(client, conversation_id) == []


@pytest.mark.parametrize(
    "body",
    [{}, {"content": ""}, {"content": 42}, {"content": "hi", "stream": "sometimes"}],
)
def test_malformed_message_bodies_are_422(client: TestClient, body: dict[str, object]) -> None:
    make_goal(client)
    conversation_id = make_conversation(client)
    response = client.post(f"/v1/conversations/{conversation_id}/messages", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("body.")
    assert _messages(client, conversation_id) == []


def test_invalid_json_is_422(client: TestClient) -> None:
    make_goal(client)
    conversation_id = make_conversation(client)
    response = client.post(
        f"/v1/conversations/{conversation_id}/messages",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "validation_error"
