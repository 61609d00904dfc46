"""Drive the gateway example with the official OpenAI and Anthropic Python SDKs.

Run by tests/official_sdks.rs with the gateway's and the sims' URLs in the
environment. Every call goes through the gateway; the sims are touched only
through their admin routes, to start and end an outage of the primary.
"""
import json
import os
import urllib.request

import openai

GW, PRIMARY = os.environ["GW"], os.environ["PRIMARY"]
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


def admin(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(PRIMARY + path, data=data, method=method)
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


def everything():
    served = chat_plain()
    chat_streamed()
    chat_tools()
    return served, embeddings()


# --- healthy: the primary answers -------------------------------------------
assert everything() == ("primary/gpt-4o-mini", "primary/text-embedding-3-small")
models = {m.id for m in oa.models.list()}
assert {"gpt-4o-mini", "claude-haiku-4-5", "text-embedding-3-small"} <= models, models

# --- the primary goes down in the middle: the SDK sees nothing ---------------
outage(True)
served = {everything() for _ in range(3)}
assert served == {("backup/claude-haiku-4-5", "embed-backup/text-embedding-3-small")}, served
outage(False)

print("official SDKs through the gateway OK")
