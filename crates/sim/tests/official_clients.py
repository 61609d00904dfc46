"""Drive simulated providers with the official OpenAI and Anthropic Python SDKs.

Run by tests/official_clients.rs with the sims' URLs in the environment.
"""
import os

import anthropic
import openai

OA, OA_DOWN, AN, AN_DOWN = (os.environ[k] for k in ("OA", "OA_DOWN", "AN", "AN_DOWN"))
MSGS = [{"role": "user", "content": "Say something about failover."}]

# --- OpenAI -----------------------------------------------------------------
oa = openai.OpenAI(base_url=OA + "/v1", api_key="sk-test", max_retries=0)
r = oa.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
assert r.object == "chat.completion", r
assert r.choices[0].message.content and r.choices[0].finish_reason == "stop", r
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage

chunks = list(
    oa.chat.completions.create(
        model="gpt-4o-mini", messages=MSGS, stream=True, stream_options={"include_usage": True}
    )
)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text, chunks
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0, chunks[-1]

raw = oa.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSGS)
assert int(raw.headers["x-ratelimit-remaining-requests"]) > 0, raw.headers
assert raw.parse().choices[0].message.content

schema = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
r = oa.chat.completions.create(
    model="gpt-4o-mini",
    messages=MSGS,
    response_format={"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": schema}},
)
import json

city = json.loads(r.choices[0].message.content)
assert isinstance(city["city"], str) and isinstance(city["population"], int), city

models = oa.models.list()
assert len(models.data) > 0 and models.data[0].id, models

down = openai.OpenAI(base_url=OA_DOWN + "/v1", api_key="sk-test", max_retries=0)
try:
    down.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    raise AssertionError("expected an error")
except openai.InternalServerError as e:
    assert e.status_code == 503, e

# --- Anthropic --------------------------------------------------------------
an = anthropic.Anthropic(base_url=AN, api_key="sk-ant-test", max_retries=0)
m = an.messages.create(model="claude-sonnet-4-5", max_tokens=200, messages=MSGS)
assert m.type == "message" and m.stop_reason == "end_turn", m
assert m.content[0].type == "text" and m.content[0].text, m
assert m.usage.output_tokens > 0, m.usage

with an.messages.stream(model="claude-sonnet-4-5", max_tokens=200, messages=MSGS) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
assert streamed and final.content[0].text == streamed, (streamed, final)
assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0, final

m = an.messages.create(model="claude-sonnet-4-5", max_tokens=3, messages=MSGS)
assert m.stop_reason == "max_tokens", m

raw = an.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=50, messages=MSGS)
assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z"), raw.headers

down = anthropic.Anthropic(base_url=AN_DOWN, api_key="sk-ant-test", max_retries=0)
try:
    down.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=MSGS)
    raise AssertionError("expected an error")
except anthropic.APIStatusError as e:
    assert e.status_code == 529, e

print("official clients OK")
