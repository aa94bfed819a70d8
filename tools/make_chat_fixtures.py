#!/usr/bin/env python3
"""Render each chat template in Tests/VKFTokenizerTests/Fixtures/chat/templates/ with
jinja2 configured exactly as transformers' `_compile_jinja_template` does
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its `tojson`
filter and `raise_exception` / `strftime_now` globals) and the context of
`render_jinja_template` (messages, tools, documents, add_generation_prompt, special tokens,
extra kwargs). Writes Fixtures/chat/expected.json. The Swift suite never runs Python.

    python3 -m venv /tmp/chatvenv && /tmp/chatvenv/bin/pip install jinja2
    /tmp/chatvenv/bin/python tools/make_chat_fixtures.py
"""
import json
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parent.parent
CHAT = ROOT / "Tests/VKFTokenizerTests/Fixtures/chat"


def compile_template(source):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
BASIC = [SYSTEM, {"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi there, how can I help?"},
         {"role": "user", "content": "What is 2 + 2?"}]
NO_SYSTEM = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi."},
             {"role": "user", "content": "Tell me a joke."}]
SINGLE = [{"role": "user", "content": "Hi"}]
TRICKY = [SYSTEM,
          {"role": "user", "content": "  Line one\nLine two\n\n{{ not a tag }} {% neither %} {# nor #}  "},
          {"role": "assistant", "content": "Ünïcödé ✓ 日本語 😀 \"quotes\" 'single' \\backslash\t tab"},
          {"role": "user", "content": "Trailing newline\n"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City, e.g. Zürich"},
                                                          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                         "required": ["city"]}}}]
TOOL_CHAT = [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": None, "tool_calls": [
                 {"id": "call12345", "type": "function",
                  "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
             {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temp\": 21.5}"},
             {"role": "assistant", "content": "It is 21.5 °C in Paris."},
             {"role": "user", "content": "Thanks"}]
BAD_ORDER = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]

TOKENS = {
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "llama31": ("<|begin_of_text|>", "<|eot_id|>"),
    "qwen25": ("", "<|im_end|>"),
    "mistral-v0.3": ("<s>", "</s>"),
    "llama2": ("<s>", "</s>"),
    "zephyr": ("<s>", "</s>"),
}
CONVERSATIONS = {"basic": BASIC, "no_system": NO_SYSTEM, "single": SINGLE, "tricky": TRICKY}
EXTRA = {  # template-specific cases: (case name, messages, extra kwargs)
    "qwen25": [("tools", TOOL_CHAT, {"tools": TOOLS}), ("tool_history", TOOL_CHAT, {})],
    "llama31": [("tools", TOOL_CHAT, {"tools": TOOLS}), ("date", BASIC, {"date_string": "01 Jan 2025"})],
    "mistral-v0.3": [("tools", TOOL_CHAT, {"tools": TOOLS}), ("bad_order", BAD_ORDER, {})],
    "llama2": [("bad_order", BAD_ORDER, {})],
}


def main():
    templates = {p.stem: p.read_text() for p in sorted((CHAT / "templates").glob("*.jinja"))}
    cases = []
    for name, source in templates.items():
        template = compile_template(source)
        bos, eos = TOKENS[name]
        runs = [(c, m, {}) for c, m in CONVERSATIONS.items()] + EXTRA.get(name, [])
        for case, messages, extra in runs:
            for agp in (False, True):
                entry = {"template": name, "case": case, "add_generation_prompt": agp, "bos_token": bos,
                         "eos_token": eos, "messages": messages, "extra": extra}
                try:
                    entry["expected"] = template.render(messages=messages, tools=extra.get("tools"), documents=None,
                                                        add_generation_prompt=agp, bos_token=bos, eos_token=eos,
                                                        **{k: v for k, v in extra.items() if k != "tools"})
                except jinja2.exceptions.TemplateError as e:
                    entry["error"] = str(e)
                cases.append(entry)
    out = CHAT / "expected.json"
    out.write_text(json.dumps({"generator": "tools/make_chat_fixtures.py", "jinja2": jinja2.__version__,
                               "cases": cases}, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
