"""The official openai and anthropic SDKs against the real gateway."""

import anthropic
import openai
import pytest


def test_models(oa, an):
    ids = [m.id for m in oa.models.list()]
    assert ids == ["gpt-4o-mini", "gpt-5.1-codex", "text-embedding-3-small", "claude-sonnet-4-6", "qwen3-coder"]
    page = an.models.list()
    claude = [m for m in page.data if m.id == "claude-sonnet-4-6"][0]
    assert claude.display_name == "Claude Sonnet 4.6"
    assert claude.type == "model"


def test_chat_non_stream(oa, stack):
    stack.script({"usage": {"input": 11, "output": 4}, "text": "pong"})
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}])
    assert r.choices[0].message.content == "pong"
    assert r.usage.prompt_tokens == 11 and r.usage.completion_tokens == 4


def test_chat_stream(oa, stack):
    stack.script({"text": "one two three"})
    stream = oa.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "count"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_chat_stream_include_usage(oa, stack):
    stack.script({"usage": {"input": 30, "cached": 20, "output": 5}})
    stream = oa.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 50
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 20


def test_responses_stream(oa, stack):
    stack.script({"text": "a haiku here", "usage": {"input": 40, "output": 6, "reasoning": 2}})
    with oa.responses.stream(model="gpt-5.1-codex", input="write a haiku") as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert "".join(deltas) == "a haiku here"
    assert final.output_text == "a haiku here"
    assert final.usage.input_tokens == 40 and final.usage.output_tokens_details.reasoning_tokens == 2


def test_embeddings_default_base64(oa, stack):
    r = oa.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    assert len(r.data) == 2
    assert len(r.data[0].embedding) == 1536
    assert isinstance(r.data[0].embedding[0], float)
    # The SDK asked for base64 and decoded it itself.
    sent = stack.upstream_requests()[-1]
    assert '"encoding_format":"base64"' in sent["body"].replace(" ", "")


def test_messages_non_stream(an, stack):
    stack.script({"text": "bonjour", "usage": {"input": 9, "cached": 100, "cache_write": 10, "output": 3}})
    m = an.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text == "bonjour"
    assert m.usage.input_tokens == 9 and m.usage.cache_read_input_tokens == 100
    assert m.stop_reason == "end_turn"


def test_messages_stream(an, stack):
    stack.script({"text": "streamed answer", "split": 2})
    with an.messages.stream(model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "streamed answer"
    assert final.content[0].text == "streamed answer"
    assert final.usage.output_tokens > 0


def test_messages_tool_use_stream(an, stack):
    stack.script({"tool_call": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}})
    with an.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=50,
        tools=[{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}],
        messages=[{"role": "user", "content": "weather?"}],
    ) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[-1].input == {"city": "Paris"}


def test_count_tokens(an):
    r = an.messages.count_tokens(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hello"}])
    assert r.input_tokens > 0


def test_authentication_errors(stack):
    bad = "codex_" + "x" * 40
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=stack.base + "/v1", api_key=bad, max_retries=0).models.list()
    assert e.value.status_code == 401
    assert e.value.body["message"] == "Invalid API key: no such key"
    with pytest.raises(anthropic.AuthenticationError) as e:
        anthropic.Anthropic(base_url=stack.base, api_key=bad, max_retries=0).messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.body["error"]["type"] == "authentication_error"


def test_not_found_model(oa):
    with pytest.raises(openai.NotFoundError) as e:
        oa.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found"
