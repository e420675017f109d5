"""The official SDKs on upstreams that speak another API: the anthropic SDK and
the openai SDK's Responses API on a chat-only upstream (qwen3-coder on channel
`qc`), the openai chat SDK on an Anthropic upstream (claude-sonnet-4-6)."""

import json

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def last_chat_request(stack):
    return stack.upstream_requests(stack.chat_fake)[-1]


def test_anthropic_sdk_stream_with_tool_round_trip_on_chat_upstream(an, stack):
    stack.script(
        {"tool_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}, "split": 3},
        upstream=stack.chat_fake,
    )
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    with an.messages.stream(
        model="qwen3-coder", max_tokens=200, system="Use tools.", tools=[WEATHER_TOOL], messages=messages
    ) as s:
        deltas = [e.delta.partial_json for e in s if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    assert json.loads("".join(deltas)) == {"city": "Paris"}
    assert first.usage.output_tokens > 0
    assert first.model == "qwen3-coder"
    up = last_chat_request(stack)
    assert up["path"] == "/v1/chat/completions"
    assert json.loads(up["body"])["tools"][0]["function"]["name"] == "get_weather"

    stack.script({"text": "It is sunny in Paris."}, upstream=stack.chat_fake)
    messages += [
        {"role": "assistant", "content": [c.model_dump(exclude_none=True) for c in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}]},
    ]
    with an.messages.stream(model="qwen3-coder", max_tokens=200, tools=[WEATHER_TOOL], messages=messages) as s:
        text = "".join(s.text_stream)
        second = s.get_final_message()
    assert text == "It is sunny in Paris."
    assert second.stop_reason == "end_turn"
    sent = json.loads(last_chat_request(stack)["body"])["messages"]
    assert sent[0] == {"role": "user", "content": "Weather in Paris?"}
    assert sent[1]["tool_calls"][0]["id"] == call.id
    tool_msg = [m for m in sent if m["role"] == "tool"][0]
    assert tool_msg == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}


def test_anthropic_sdk_non_stream_on_chat_upstream(an, stack):
    stack.script({"text": "pong", "usage": {"input": 11, "output": 2}}, upstream=stack.chat_fake)
    m = an.messages.create(model="qwen3-coder", max_tokens=20, messages=[{"role": "user", "content": "ping"}])
    assert m.content[0].text == "pong"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (11, 2)


def test_openai_responses_stream_function_call_round_trip_on_chat_upstream(oa, stack):
    stack.script(
        {"tool_call": {"name": "exec_command", "arguments": '{"cmd": "ls"}'}, "usage": {"input": 50, "output": 7}},
        upstream=stack.chat_fake,
    )
    tools = [
        {
            "type": "function",
            "name": "exec_command",
            "description": "Run a shell command",
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
        }
    ]
    inp = [{"role": "user", "content": "list the files"}]
    with oa.responses.stream(model="qwen3-coder", instructions="You are Codex.", input=inp, tools=tools) as s:
        kinds = [e.type for e in s]
        first = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "exec_command"
    assert json.loads(calls[0].arguments) == {"cmd": "ls"}
    assert first.usage.input_tokens == 50 and first.usage.output_tokens == 7
    assert first.model == "qwen3-coder"

    stack.script({"text": "README.md and src/"}, upstream=stack.chat_fake)
    inp += [calls[0].model_dump(exclude_none=True), {"type": "function_call_output", "call_id": calls[0].call_id, "output": "README.md\nsrc/"}]
    with oa.responses.stream(model="qwen3-coder", instructions="You are Codex.", input=inp, tools=tools) as s:
        second = s.get_final_response()
    assert second.output_text == "README.md and src/"
    sent = json.loads(last_chat_request(stack)["body"])["messages"]
    assert sent[0] == {"role": "system", "content": "You are Codex."}
    assert sent[2]["tool_calls"][0]["id"] == calls[0].call_id
    assert sent[3] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "README.md\nsrc/"}


def test_openai_chat_sdk_on_anthropic_upstream(oa, stack):
    stack.script({"text": "Bonjour", "usage": {"input": 9, "output": 3}})
    r = oa.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Bonjour"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (9, 3)

    stack.script({"tool_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}})
    chunks = list(
        oa.chat.completions.create(
            model="claude-sonnet-4-6",
            stream=True,
            stream_options={"include_usage": True},
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL["input_schema"]}}],
            messages=[{"role": "user", "content": "weather in Oslo?"}],
        )
    )
    args = "".join(
        tc.function.arguments or ""
        for c in chunks
        if c.choices
        for tc in (c.choices[0].delta.tool_calls or [])
    )
    assert json.loads(args) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    up = stack.upstream_requests()[-1]
    assert up["path"] == "/v1/messages"
    assert json.loads(up["body"])["tools"][0]["name"] == "get_weather"
