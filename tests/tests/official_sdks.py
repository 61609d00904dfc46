"""Drive the gateway example with the official OpenAI and Anthropic Python SDKs.

Run by tests/official_sdks.rs with the gateway's and the sims' URLs in the
environment. Every call goes through the gateway; the sims are touched only
through their admin routes, to start and end outages (the primary, then every provider).
"""
import json
import os
import urllib.request

import anthropic
import openai

GW, PRIMARY, BACKUP = os.environ["GW"], os.environ["PRIMARY"], os.environ["BACKUP"]
MSGS = [{"role": "user", "content": "Say something about failover."}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def admin(method, path, body=None, base=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request((base or PRIMARY) + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200, r.status


def outage(on):
    if on:
        admin("POST", "/_sim/faults", [{"kind": "status", "status": 503}])
    else:
        admin("DELETE", "/_sim/faults")


# max_retries=0: the gateway, not the SDK, must hide the outage.
oa = openai.OpenAI(base_url=GW + "/v1", api_key="caller-key", max_retries=0)


def chat_plain():
    raw = oa.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSGS)
    r = raw.parse()
    assert r.object == "chat.completion", r
    assert r.choices[0].message.content and r.choices[0].finish_reason == "stop", r
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage
    return raw.headers["x-failover-provider"]


def chat_streamed():
    chunks = list(
        oa.chat.completions.create(
            model="gpt-4o-mini", messages=MSGS, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text, chunks
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0, chunks[-1]


def chat_tools():
    r = oa.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
        ],
        tools=TOOLS,
        tool_choice="auto",
    )
    assert r.choices[0].message.content or r.choices[0].message.tool_calls, r


def embeddings():
    raw = oa.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["failover", "circuit", "failover"]
    )
    r = raw.parse()  # the SDK asks for base64 and decodes it
    vecs = [d.embedding for d in r.data]
    assert [len(v) for v in vecs] == [1536] * 3, [len(v) for v in vecs]
    assert vecs[0] == vecs[2] and vecs[0] != vecs[1]
    assert abs(sum(x * x for x in vecs[0]) - 1.0) < 1e-3
    floats = oa.embeddings.create(
        model="text-embedding-3-small", input="failover", encoding_format="float", dimensions=8
    )
    assert len(floats.data[0].embedding) == 8, floats
    assert r.usage.prompt_tokens > 0, r.usage
    return raw.headers["x-failover-provider"]


an = anthropic.Anthropic(base_url=GW, api_key="caller-key", max_retries=0)
AN_TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
AN_MSGS = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    },
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 C"}],
    },
]


def messages_create():
    raw = an.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=200, system="Be brief.", messages=MSGS
    )
    m = raw.parse()
    assert m.type == "message" and m.role == "assistant", m
    assert m.content[0].type == "text" and m.content[0].text, m
    assert m.stop_reason == "end_turn", m
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage
    m = an.messages.create(
        model="gpt-4o-mini", max_tokens=200, messages=AN_MSGS, tools=AN_TOOLS,
        tool_choice={"type": "auto"},
    )
    assert m.content and m.stop_reason in ("end_turn", "tool_use"), m
    return raw.headers["x-failover-provider"]


def messages_stream():
    with an.messages.stream(
        model="gpt-4o-mini", max_tokens=200, system="Be brief.", messages=MSGS
    ) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed and final.content[0].text == streamed, (streamed, final)
    assert final.stop_reason == "end_turn", final
    assert final.usage.output_tokens > 0, final.usage
    with an.messages.stream(
        model="gpt-4o-mini", max_tokens=200, messages=AN_MSGS, tools=AN_TOOLS
    ) as s:
        final = s.get_final_message()
    assert final.content, final


def everything():
    served = chat_plain()
    chat_streamed()
    chat_tools()
    embedded = embeddings()
    messaged = messages_create()
    messages_stream()
    assert messaged == served, (messaged, served)
    return served, embedded


# --- healthy: the primary answers -------------------------------------------
assert everything() == ("primary/gpt-4o-mini", "primary/text-embedding-3-small")
models = {m.id for m in oa.models.list()}
assert {"gpt-4o-mini", "claude-haiku-4-5", "text-embedding-3-small"} <= models, models

# --- the primary goes down in the middle: the SDK sees nothing ---------------
outage(True)
served = {everything() for _ in range(3)}
assert served == {("backup/claude-haiku-4-5", "embed-backup/text-embedding-3-small")}, served

# --- every provider down: the Anthropic SDK sees 529 overloaded_error -------
admin("POST", "/_sim/faults", [{"kind": "status", "status": 503}], base=BACKUP)
try:
    for _ in range(4):  # until the backup's circuit opens too
        an.messages.create(model="gpt-4o-mini", max_tokens=50, messages=MSGS)
    raise AssertionError("expected an error")
except anthropic.APIStatusError as e:
    assert e.status_code == 529, e
    assert isinstance(e, anthropic.OverloadedError) or e.body["error"]["type"] == "overloaded_error", e
    assert e.response.headers.get("retry-after"), e.response.headers
try:
    oa.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    raise AssertionError("expected an error")
except openai.APIStatusError as e:
    assert e.status_code == 503, e
admin("DELETE", "/_sim/faults", base=BACKUP)
outage(False)

print("official SDKs through the gateway OK")
